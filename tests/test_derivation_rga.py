"""The RGA chapter's derivation checks accept RGA-S and RGA-C and reject broken versions of them."""

import pytest
import torch
from einops.layers.torch import Reduce
from torch import nn

from attn_lib.checks.rga import (
    _prepared,
    check_rga_depends_on_own_relations,
    check_rga_is_a_gate,
    check_rga_matches_formula,
    check_rga_matches_official_replay,
    check_rga_relation_vectors,
    official_forward,
)
from attn_lib.rga import RGAChannel, RGASpatial

CHECKS = [check_rga_matches_formula, check_rga_relation_vectors, check_rga_depends_on_own_relations,
          check_rga_is_a_gate, check_rga_matches_official_replay]
CLASSES = [RGASpatial, RGAChannel]
KWARGS = dict(spatial_size=(4, 5), cha_ratio=2, spa_ratio=4, down_ratio=2)


def build(cls, variant, mutant=None):
    if mutant is not None:
        cls = type(f"Broken{cls.__name__}", (mutant, cls), {})
    return cls(6, variant=variant, **KWARGS)


class RowsOnly:
    """Broken: r_i = [R(i, :); R(i, :)], the column R(:, i) is missing."""

    def relation_vectors(self, relations):
        rows = self.rows(relations)
        return torch.cat([rows, rows], dim=1)


class SwappedOrder:
    """Broken: r_i = [R(:, i); R(i, :)], the two halves in the wrong order."""

    def relation_vectors(self, relations):
        return torch.cat([self.cols(relations), self.rows(relations)], dim=1)


class TransposedR:
    """Broken: R = K^T Q instead of Q^T K (every affinity read in the wrong direction)."""

    def relations(self, x):
        return super().relations(x).transpose(1, 2)


def no_sigmoid(m):
    m.sigmoid = nn.Identity()


def max_pool(m):
    spatial = isinstance(m, RGASpatial)
    m.pool = Reduce("b k h w -> b 1 h w" if spatial else "b k c 1 -> b 1 c 1", "max")


def no_relu_on_qk(m):
    m.query[-1] = nn.Identity()
    m.key[-1] = nn.Identity()


MUTANTS = {
    "rows-only": (RowsOnly, None, [check_rga_matches_formula, check_rga_relation_vectors,
                                   check_rga_depends_on_own_relations, check_rga_matches_official_replay]),
    "swapped-order": (SwappedOrder, None, [check_rga_matches_formula, check_rga_relation_vectors,
                                           check_rga_matches_official_replay]),
    "transposed-R": (TransposedR, None, [check_rga_matches_formula, check_rga_matches_official_replay]),
    "no-sigmoid": (None, no_sigmoid, [check_rga_matches_formula,     # the official BN can keep logits in (0, 1)
                                      check_rga_matches_official_replay]),
    "max-pool": (None, max_pool, [check_rga_matches_formula, check_rga_matches_official_replay]),
    "no-relu-on-QK": (None, no_relu_on_qk, [check_rga_matches_formula, check_rga_relation_vectors]),
}


@pytest.mark.parametrize("variant", RGASpatial.VARIANTS)
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_rga(check, cls, variant):
    check(build(cls, variant))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_rga(mutant, cls):
    mixin, breakage, checks = MUTANTS[mutant]
    for variant in cls.VARIANTS:
        broken = build(cls, variant, mixin)
        if breakage is not None:
            breakage(broken)
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_module_refuses_another_size(cls):
    m = cls(6, spatial_size=(4, 5))
    pattern = rf"{cls.__name__} expects input of shape \(B, 6, 4, 5\), got \(1, 6, 5, 4\): it is built for spatial_size=\(4, 5\) only"
    with pytest.raises(ValueError, match=pattern):
        m(torch.randn(1, 6, 5, 4))


def test_spatial_then_channel_is_the_official_module_with_both_switches_on():
    s, _ = _prepared(RGASpatial(6, variant="official", **KWARGS), seed=7)
    c, _ = _prepared(RGAChannel(6, variant="official", **KWARGS), seed=8)
    x = torch.randn(2, 6, *KWARGS["spatial_size"], dtype=torch.float64)
    with torch.no_grad():
        replay = official_forward(x, spatial=s, channel=c)
        torch.testing.assert_close(nn.Sequential(s, c)(x), replay, rtol=1e-10, atol=1e-12)
        assert not torch.allclose(nn.Sequential(c, s)(x), replay), "the order must matter"
