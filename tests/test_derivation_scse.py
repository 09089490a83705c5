"""The scSE chapter's derivation checks accept SCSE and reject deliberately broken versions of it."""

import pytest
import torch
from torch import nn

from attn_lib.checks.scse import (
    check_scse_branches_are_channel_and_spatial_gains,
    check_scse_matches_formula,
    check_scse_matches_official_code,
    official_layout,
)
from attn_lib.scse import SCSE, _OFFICIAL_PREFIXES, _rename_official, convert_official_state_dict

CHECKS = [check_scse_matches_formula, check_scse_branches_are_channel_and_spatial_gains]


class AddWhenMaxIsAsked(SCSE):
    """Broken: always adds (the MICCAI rule), whatever the aggregation says."""

    def forward(self, u):
        return u * self.channel_gain(u) + u * self.spatial_gain(u)


class SwappedConcat(SCSE):
    """Broken: concatenates [U_sSE; U_cSE] instead of [U_cSE; U_sSE]."""

    def forward(self, u):
        out = super().forward(u)
        if self.aggregation == "concat":
            c = self.channels
            out = torch.cat([out[:, c:], out[:, :c]], dim=1)
        return out


class SpatialSqueezePoolsOverSpace(SCSE):
    """The classic mix-up: the sSE gate pools over H, W as cSE does."""

    def spatial_gain(self, u):
        return torch.sigmoid(self.w_sq(u.mean((2, 3), keepdim=True)))


class ChannelGainWithoutSigmoid(SCSE):
    def channel_gain(self, u):
        s = self.w_2(torch.relu(self.w_1(u.mean((2, 3)))))
        return s.view(s.shape[0], s.shape[1], 1, 1)


class ChannelSqueezeByMax(SCSE):
    def channel_gain(self, u):
        s = torch.sigmoid(self.w_2(torch.relu(self.w_1(u.amax((2, 3))))))
        return s.view(s.shape[0], s.shape[1], 1, 1)


class ChannelGainWithoutReLU(SCSE):
    def channel_gain(self, u):
        s = torch.sigmoid(self.w_2(self.w_1(u.mean((2, 3)))))
        return s.view(s.shape[0], s.shape[1], 1, 1)


class SpatialRegisteredFirst(SCSE):
    """Broken official layout: w_sq registered before w_1, w_2 (a load by position pairs the wrong
    tensors; the state dict is not in the official order)."""

    def __init__(self, channels, **kwargs):
        super().__init__(channels, **kwargs)
        for name in ("w_1", "w_2"):
            self._modules[name] = self._modules.pop(name)


def paper_with_biases(m):
    """Broken: the paper variant built with PyTorch's default biases."""
    m.w_1 = nn.Linear(m.w_1.in_features, m.w_1.out_features)
    m.w_2 = nn.Linear(m.w_2.in_features, m.w_2.out_features)
    m.w_sq = nn.Conv2d(m.channels, 1, 1)


def official_without_biases(m):
    """Broken: the official variant without the code's biases (its checkpoints would not load)."""
    m.w_1 = nn.Linear(m.w_1.in_features, m.w_1.out_features, bias=False)
    m.w_2 = nn.Linear(m.w_2.in_features, m.w_2.out_features, bias=False)
    m.w_sq = nn.Conv2d(m.channels, 1, 1, bias=False)


class SwappedW1W2(SCSE):
    """Broken: W_2 applied first, then W_1 (a square bottleneck at r = 1, so the shapes fit)."""

    def channel_gain(self, u):
        s = torch.sigmoid(self.w_1(torch.relu(self.w_2(u.mean((2, 3))))))
        return s.view(s.shape[0], s.shape[1], 1, 1)


MUTANTS = {
    # name: (class, constructor keywords, breakage, checks that must reject it)
    "add-instead-of-max": (AddWhenMaxIsAsked, {"variant": "official"}, None,
                           [check_scse_matches_formula, check_scse_matches_official_code]),
    "swapped-concat": (SwappedConcat, {"aggregation": "concat"}, None, CHECKS),
    "sse-pools-space": (SpatialSqueezePoolsOverSpace, {}, None, [check_scse_matches_formula]),
    "cse-no-sigmoid": (ChannelGainWithoutSigmoid, {}, None, CHECKS),
    "cse-no-relu": (ChannelGainWithoutReLU, {}, None, [check_scse_matches_formula]),
    "cse-max-squeeze": (ChannelSqueezeByMax, {}, None, [check_scse_matches_formula]),
    "paper-with-biases": (SCSE, {}, paper_with_biases, [check_scse_matches_formula]),
    "official-without-biases": (SCSE, {"variant": "official"}, official_without_biases,
                                [check_scse_matches_formula, check_scse_matches_official_code]),
    "swapped-w1-w2": (SwappedW1W2, {"reduction": 1, "variant": "official"}, None,
                      [check_scse_matches_formula, check_scse_matches_official_code]),
    "official-registered-out-of-order": (SpatialRegisteredFirst, {"variant": "official"}, None,
                                         [check_scse_matches_official_code]),
}


@pytest.mark.parametrize("variant", SCSE.VARIANTS)
@pytest.mark.parametrize("aggregation", SCSE.AGGREGATIONS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_scse(variant, aggregation, check):
    check(SCSE(12, variant=variant, aggregation=aggregation))


@pytest.mark.parametrize("reduction", [1, 2, 4])
def test_official_check_accepts_the_official_variant(reduction):
    check_scse_matches_official_code(SCSE(12, variant="official", reduction=reduction))


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_scse(mutant):
    cls, kwargs, breakage, checks = MUTANTS[mutant]
    broken = cls(12, **kwargs)
    if breakage is not None:
        breakage(broken)
    with torch.no_grad():
        broken(torch.randn(2, 12, 5, 7))                        # the mutant runs: it is wrong, not broken
    for check in checks:
        with pytest.raises(AssertionError):
            check(broken)


def test_official_check_rejects_a_converter_that_swaps_fc1_and_fc2():
    def swapped(state_dict):
        prefixes = (("cSE.fc1.", "w_2."), ("cSE.fc2.", "w_1."), ("sSE.conv.", "w_sq."))
        return _rename_official(state_dict, prefixes)

    with pytest.raises(AssertionError):
        check_scse_matches_official_code(SCSE(12, variant="official", reduction=1), convert=swapped)


def test_converter_maps_the_official_keys_in_order():
    converted = convert_official_state_dict(dict.fromkeys(official_layout(12)))
    assert list(converted) == list(SCSE(12, variant="official").state_dict())
    assert dict(_OFFICIAL_PREFIXES)["sSE.conv."] == "w_sq."


def test_aggregation_defaults_follow_the_variant():
    assert SCSE(12).aggregation == "add"                       # the MICCAI paper
    assert SCSE(12, variant="official").aggregation == "max"   # the released code
    assert SCSE(12, aggregation="max").aggregation == "max"


def test_min_width_sets_the_smallest_hidden_width():
    assert SCSE(4, reduction=8).w_1.out_features == 1           # max(1, C // r): the paper's C / r
    assert SCSE(4, reduction=8, min_width=4).w_1.out_features == 4
    assert SCSE(64, reduction=2, min_width=4).w_1.out_features == 32
    with pytest.raises(ValueError, match="min_width"):
        SCSE(4, min_width=0)


def test_concat_doubles_the_channels_and_says_so():
    block = SCSE(12, aggregation="concat")
    assert block.out_channels == 24
    assert block(torch.randn(2, 12, 5, 7)).shape == (2, 24, 5, 7)


def test_unknown_aggregation_is_refused():
    with pytest.raises(ValueError, match="aggregation"):
        SCSE(12, aggregation="mean")
