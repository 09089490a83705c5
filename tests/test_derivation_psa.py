"""The PSA chapter's derivation checks accept both layouts in both variants and reject
deliberately broken versions of them."""

import pytest
import torch
from torch import nn

from attn_lib.checks.psa import (
    check_psa_attention_shapes,
    check_psa_branches_match_formula,
    check_psa_composition,
    check_psa_internal_width,
    check_psa_matches_formula,
    check_psa_softmax_axes,
)
from attn_lib.psa import PSAChannel, PSAParallel, PSASequential, PSASpatial, _softmax

CHECKS = [
    check_psa_branches_match_formula,
    check_psa_matches_formula,
    check_psa_composition,
    check_psa_attention_shapes,
    check_psa_softmax_axes,
    check_psa_internal_width,
]
CASES = [(cls, v) for cls in (PSAParallel, PSASequential) for v in cls.VARIANTS]
C = 16


# ---------------------------------------------------------------- broken blocks
class BothGatesFromX(PSASequential):
    """Broken port: the 'sequential' block computes both gates from x and multiplies them."""

    def forward(self, x):
        return self.channel_only.gate(x) * self.spatial_only.gate(x) * x


class SpatialFirst(PSASequential):
    """Broken: the sequential layout in the wrong order, channel(spatial(x))."""

    def forward(self, x):
        return self.channel_only(self.spatial_only(x))


class ChannelSoftmaxOverWidth(PSAChannel):
    """Broken: the channel branch's softmax over W only (each row of the map sums to one)."""

    def weights(self, x):
        return _softmax(self.w_q(x), 3)


class SpatialSoftmaxOverBatch(PSASpatial):
    """Broken: the paper's spatial softmax over the batch instead of the C/2 channels."""

    def weights(self, x):
        return _softmax(self.pool(self.w_q(x)), 0)


class AffineOnly(nn.LayerNorm):
    """Broken LayerNorm: same parameters, but it only scales and shifts (no normalisation)."""

    def forward(self, x):
        return x * self.weight + self.bias


def as_class(attr, cls):
    def breakage(m):
        getattr(m, attr).__class__ = cls
    return breakage


def remove_layernorm(m):
    m.channel_only.w_z[1] = nn.Identity()


def inert_layernorm(m):
    old = m.channel_only.w_z[1]
    new = AffineOnly(old.normalized_shape)
    new.load_state_dict(old.state_dict())
    m.channel_only.w_z[1] = new


def swap_branch_attributes(m):
    m.channel_only, m.spatial_only = m.spatial_only, m.channel_only


def flip_spatial_softmax(m):
    """Official-versus-paper swap: the paper's block with the official PSA_p softmax, and back."""
    m.spatial_only.form = "official_p" if m.variant == "paper" else "paper"


def bottleneck_without_relu(m):
    """The official PSA_s bottleneck W_z without its ReLU (only the official variant has one)."""
    m.channel_only.w_z[2] = nn.Identity()


def quarter_width(m):
    """An SE-style bottleneck: the channel branch keeps C/4 instead of C/2 channels."""
    m.channel_only.w_v = nn.Conv2d(C, C // 4, 1, bias=False)
    m.channel_only.w_z[0] = nn.Conv2d(C // 4, C, 1, bias=False)


FORMULA = [check_psa_branches_match_formula, check_psa_matches_formula]
BOTH = ("paper", "official")
MUTANTS = {
    # name: (class, breakage, variants, checks that must reject it)
    "sequential-both-from-x": (BothGatesFromX, None, BOTH, [check_psa_matches_formula, check_psa_composition]),
    "sequential-wrong-order": (SpatialFirst, None, BOTH, [check_psa_matches_formula, check_psa_composition]),
    "channel-softmax-wrong-axis": (PSAParallel, as_class("channel_only", ChannelSoftmaxOverWidth), BOTH,
                                   FORMULA + [check_psa_softmax_axes]),
    "channel-softmax-wrong-axis-seq": (PSASequential, as_class("channel_only", ChannelSoftmaxOverWidth), BOTH,
                                       FORMULA + [check_psa_softmax_axes]),
    "spatial-softmax-wrong-axis": (PSAParallel, as_class("spatial_only", SpatialSoftmaxOverBatch), ("paper",),
                                   FORMULA + [check_psa_softmax_axes]),
    "layernorm-missing": (PSAParallel, remove_layernorm, ("paper",), FORMULA + [check_psa_internal_width]),
    "layernorm-missing-seq": (PSASequential, remove_layernorm, BOTH, FORMULA + [check_psa_internal_width]),
    "layernorm-inert": (PSAParallel, inert_layernorm, ("paper",), FORMULA),
    "layernorm-inert-seq": (PSASequential, inert_layernorm, BOTH, FORMULA),
    # (the official PSA_p's two softmaxes are both over H*W: the softmax check cannot tell them apart)
    "branches-swapped": (PSAParallel, swap_branch_attributes, BOTH,
                         FORMULA + [check_psa_attention_shapes, check_psa_internal_width]),
    "branches-swapped-seq": (PSASequential, swap_branch_attributes, BOTH,
                             FORMULA + [check_psa_attention_shapes, check_psa_softmax_axes, check_psa_internal_width]),
    "official-paper-softmax-swap": (PSAParallel, flip_spatial_softmax, BOTH, FORMULA + [check_psa_softmax_axes]),
    "quarter-width": (PSAParallel, quarter_width, ("paper",), FORMULA + [check_psa_internal_width]),
    # at C = 16 the official bottleneck is C/8 = 2 wide: wide enough for its LayerNorm to matter
    "official-bottleneck-without-relu": (PSASequential, bottleneck_without_relu, ("official",), FORMULA),
}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0].__name__}-{c[1]}")
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_psa(case, check):
    cls, variant = case
    check(cls(C, variant=variant))


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_psa(mutant):
    cls, breakage, variants, checks = MUTANTS[mutant]
    for variant in variants:
        broken = cls(C, variant=variant)
        if breakage is not None:
            breakage(broken)
        with torch.no_grad():
            broken(torch.randn(2, C, 5, 7))                     # the mutant runs: it is wrong, not broken
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)


def test_sequential_is_exactly_spatial_after_channel():
    torch.manual_seed(0)
    for variant in PSASequential.VARIANTS:
        m = PSASequential(C, variant=variant).eval()
        x = torch.randn(2, C, 7, 9)
        with torch.no_grad():
            assert torch.equal(m(x), m.spatial_only(m.channel_only(x)))


def test_official_names_cover_the_official_variant():
    for cls in (PSAParallel, PSASequential):
        m = cls(C, variant="official")
        assert sorted(cls.OFFICIAL_NAMES.values()) == sorted(m.state_dict())
