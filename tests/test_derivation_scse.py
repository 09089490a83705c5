"""The scSE chapter's derivation checks accept SCSE and reject deliberately broken versions of it."""

import pytest
import torch
from einops.layers.torch import Reduce
from torch import nn

from attn_lib.checks.scse import check_scse_branches_are_channel_and_spatial_gains, check_scse_matches_formula
from attn_lib.scse import SCSE

CHECKS = [check_scse_matches_formula, check_scse_branches_are_channel_and_spatial_gains]


class AddWhenMaxIsAsked(SCSE):
    """Broken: always adds (the MICCAI rule), whatever the aggregation says."""

    def forward(self, u):
        return u * self.cse(u) + u * self.sse(u)


class SwappedConcat(SCSE):
    """Broken: concatenates [U_sSE; U_cSE] instead of [U_cSE; U_sSE]."""

    def forward(self, u):
        out = super().forward(u)
        if self.aggregation == "concat":
            c = self.channels
            out = torch.cat([out[:, c:], out[:, :c]], dim=1)
        return out


class PoolThenConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x.mean(dim=(2, 3), keepdim=True))


def spatial_squeeze_pools_over_space(m):
    """The classic mix-up: the sSE gate pools over H, W as cSE does."""
    conv = m.sse[0]
    m.sse[0] = PoolThenConv(conv.in_channels, 1, 1, bias=conv.bias is not None)


def channel_gate_without_sigmoid(m):
    m.cse[4] = nn.Identity()


def channel_squeeze_by_max(m):
    m.cse[0] = Reduce("b c h w -> b c", "max")


def paper_with_biases(m):
    """Broken: the paper variant built with PyTorch's default biases."""
    m.cse[1] = nn.Linear(m.cse[1].in_features, m.cse[1].out_features)
    m.cse[3] = nn.Linear(m.cse[3].in_features, m.cse[3].out_features)
    m.sse[0] = nn.Conv2d(m.channels, 1, 1)


def official_without_biases(m):
    """Broken: the official variant without the code's biases (its checkpoints would not load)."""
    m.cse[1] = nn.Linear(m.cse[1].in_features, m.cse[1].out_features, bias=False)
    m.cse[3] = nn.Linear(m.cse[3].in_features, m.cse[3].out_features, bias=False)
    m.sse[0] = nn.Conv2d(m.channels, 1, 1, bias=False)


MUTANTS = {
    "add-instead-of-max": (AddWhenMaxIsAsked, {"variant": "official"}, None, [check_scse_matches_formula]),
    "swapped-concat": (SwappedConcat, {"aggregation": "concat"}, None, CHECKS),
    "sse-pools-space": (SCSE, {}, spatial_squeeze_pools_over_space, [check_scse_matches_formula]),
    "cse-no-sigmoid": (SCSE, {}, channel_gate_without_sigmoid, CHECKS),
    "cse-max-squeeze": (SCSE, {}, channel_squeeze_by_max, [check_scse_matches_formula]),
    "paper-with-biases": (SCSE, {}, paper_with_biases, [check_scse_matches_formula]),
    "official-without-biases": (SCSE, {"variant": "official"}, official_without_biases, [check_scse_matches_formula]),
}


@pytest.mark.parametrize("variant", SCSE.VARIANTS)
@pytest.mark.parametrize("aggregation", SCSE.AGGREGATIONS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_scse(variant, aggregation, check):
    check(SCSE(12, variant=variant, aggregation=aggregation))


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_scse(mutant):
    cls, kwargs, breakage, checks = MUTANTS[mutant]
    broken = cls(12, **kwargs)
    if breakage is not None:
        breakage(broken)
    for check in checks:
        with pytest.raises(AssertionError):
            check(broken)


def test_concat_doubles_the_channels_and_says_so():
    block = SCSE(12, aggregation="concat")
    assert block.out_channels == 24
    assert block(torch.randn(2, 12, 5, 7)).shape == (2, 24, 5, 7)


def test_unknown_aggregation_is_refused():
    with pytest.raises(ValueError, match="aggregation"):
        SCSE(12, aggregation="mean")
