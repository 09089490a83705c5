"""The LKA chapter's derivation checks accept LKA and VANAttention and reject deliberately broken
versions of them."""

import pytest
import torch
import torch.nn.functional as nnf
from torch import nn

from attn_lib.checks.lka import (
    check_lka_gradient_support,
    check_lka_is_a_raw_product,
    check_lka_keeps_size,
    check_lka_matches_formula,
    check_lka_receptive_field,
    check_van_attention_matches_formula,
    check_van_attention_shortcut,
)
from attn_lib.lka import LKA, VANAttention

LKA_CHECKS = [
    check_lka_matches_formula,
    check_lka_keeps_size,
    check_lka_receptive_field,
    check_lka_gradient_support,
    check_lka_is_a_raw_product,
]
VAN_CHECKS = [check_van_attention_matches_formula, check_van_attention_shortcut]
C = 6


# ----------------------------------------------------------------------------- LKA mutants
class SigmoidLKA(LKA):
    """Broken: a sigmoid squashes the attention (the most common port error)."""

    def attention(self, f):
        return torch.sigmoid(super().attention(f))


class No1x1LKA(LKA):
    """Broken: the 1x1 convolution is skipped (its weights exist but are unused)."""

    def attention(self, f):
        return self.conv_spatial(self.conv0(f))


class PointwiseFirstLKA(LKA):
    """Broken: the 1x1 convolution comes first."""

    def attention(self, f):
        return self.conv_spatial(self.conv0(self.conv1(f)))


class ShiftedConv(nn.Conv2d):
    """A dilated depth-wise convolution padded (6, 12) on the columns: same size, window shifted."""

    def forward(self, x):
        return nnf.conv2d(nnf.pad(x, (6, 12, 9, 9)), self.weight, self.bias, dilation=self.dilation, groups=self.groups)


def dilation_one(m):
    m.conv_spatial = nn.Conv2d(m.channels, m.channels, 7, padding=3, groups=m.channels)


def padding_too_small(m):
    m.conv_spatial = nn.Conv2d(m.channels, m.channels, 7, padding=6, groups=m.channels, dilation=3)


def shifted_window(m):
    m.conv_spatial = ShiftedConv(m.channels, m.channels, 7, padding=0, groups=m.channels, dilation=3)


LKA_MUTANTS = {
    "sigmoid-added": (SigmoidLKA, None, [check_lka_matches_formula, check_lka_is_a_raw_product]),
    "dilation-1": (LKA, dilation_one, [check_lka_matches_formula, check_lka_receptive_field, check_lka_gradient_support]),
    "padding-6-not-9": (LKA, padding_too_small, [check_lka_keeps_size, check_lka_receptive_field]),
    "shifted-window": (LKA, shifted_window, [check_lka_matches_formula, check_lka_receptive_field, check_lka_gradient_support]),
    "no-1x1": (No1x1LKA, None, [check_lka_matches_formula, check_lka_gradient_support]),
    "1x1-first": (PointwiseFirstLKA, None, [check_lka_matches_formula]),
}


# ----------------------------------------------------------------------------- VAN block mutants
class NoShortcutVAN(VANAttention):
    """Broken: the official block without its shortcut."""

    def forward(self, x):
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))


class SwappedVAN(VANAttention):
    """Broken: the shortcut in the paper variant and not in the official one."""

    def forward(self, x):
        y = self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))
        return y + x if self.variant == "paper" else y


def relu_not_gelu(m):
    m.activation = nn.ReLU()


def sigmoid_inside(m):
    m.spatial_gating_unit = SigmoidLKA(m.channels)


VAN_MUTANTS = {
    "no-shortcut": (NoShortcutVAN, None, ("official",), VAN_CHECKS),
    "variants-swapped": (SwappedVAN, None, VANAttention.VARIANTS, VAN_CHECKS),
    "relu-not-gelu": (VANAttention, relu_not_gelu, VANAttention.VARIANTS, [check_van_attention_matches_formula]),
    "sigmoid-in-lka": (VANAttention, sigmoid_inside, VANAttention.VARIANTS, [check_van_attention_matches_formula]),
}


@pytest.mark.parametrize("variant", LKA.VARIANTS)
@pytest.mark.parametrize("check", LKA_CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_lka(variant, check):
    check(LKA(C, variant=variant))


@pytest.mark.parametrize("check", LKA_CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_another_decomposition(check):
    check(LKA(5, kernel_size=13, dilation=3))          # 5 x 5, then 5 x 5 with dilation 3: footprint 17


@pytest.mark.parametrize("variant", VANAttention.VARIANTS)
@pytest.mark.parametrize("check", VAN_CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_van_attention(variant, check):
    check(VANAttention(C, variant=variant))


def test_van_attention_contains_a_correct_lka():
    for check in LKA_CHECKS:
        check(VANAttention(C).spatial_gating_unit)


@pytest.mark.parametrize("mutant", list(LKA_MUTANTS), ids=str)
def test_checks_reject_broken_lka(mutant):
    cls, breakage, checks = LKA_MUTANTS[mutant]
    broken = cls(C)
    if breakage is not None:
        breakage(broken)
    for check in checks:
        with pytest.raises(AssertionError):
            check(broken)


@pytest.mark.parametrize("mutant", list(VAN_MUTANTS), ids=str)
def test_checks_reject_broken_van_attention(mutant):
    cls, breakage, variants, checks = VAN_MUTANTS[mutant]
    for variant in variants:
        broken = cls(C, variant=variant)
        if breakage is not None:
            breakage(broken)
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)


def test_lka_refuses_an_even_dilated_kernel():
    with pytest.raises(ValueError, match="odd"):
        LKA(C, kernel_size=21, dilation=4)


# ----------------------------------------------------------------------------- official variant
def test_lka_official_is_the_same_function_with_vans_initialisation():
    paper, official = LKA(C), LKA(C, variant="official")
    assert [(k, v.shape) for k, v in paper.state_dict().items()] == [
        (k, v.shape) for k, v in official.state_dict().items()]
    official.load_state_dict(paper.state_dict())
    x = torch.randn(2, C, 9, 11)
    assert torch.equal(paper(x), official(x))
    torch.manual_seed(0)
    fresh = LKA(64, variant="official")
    for conv, fan_out in ((fresh.conv0, 25), (fresh.conv_spatial, 49), (fresh.conv1, 64)):
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))          # Block._init_weights
        assert 0.8 < conv.weight.std().item() / (2 / fan_out) ** 0.5 < 1.25


# models/van.py at e19779b, class Attention(d_model) with its LKA: keys, shapes, order
def official_layout(d):
    return [("proj_1.weight", (d, d, 1, 1)), ("proj_1.bias", (d,)),
            ("spatial_gating_unit.conv0.weight", (d, 1, 5, 5)), ("spatial_gating_unit.conv0.bias", (d,)),
            ("spatial_gating_unit.conv_spatial.weight", (d, 1, 7, 7)),
            ("spatial_gating_unit.conv_spatial.bias", (d,)),
            ("spatial_gating_unit.conv1.weight", (d, d, 1, 1)), ("spatial_gating_unit.conv1.bias", (d,)),
            ("proj_2.weight", (d, d, 1, 1)), ("proj_2.bias", (d,))]


def official_attention_forward(x, sd):
    """Attention.forward (models/van.py, e19779b), LKA.forward inside, written out."""
    d = x.shape[1]
    y = nnf.gelu(nnf.conv2d(x, sd["proj_1.weight"], sd["proj_1.bias"]))
    a = nnf.conv2d(y, sd["spatial_gating_unit.conv0.weight"], sd["spatial_gating_unit.conv0.bias"],
                   padding=2, groups=d)
    a = nnf.conv2d(a, sd["spatial_gating_unit.conv_spatial.weight"], sd["spatial_gating_unit.conv_spatial.bias"],
                   padding=9, dilation=3, groups=d)
    a = nnf.conv2d(a, sd["spatial_gating_unit.conv1.weight"], sd["spatial_gating_unit.conv1.bias"])
    return nnf.conv2d(y * a, sd["proj_2.weight"], sd["proj_2.bias"]) + x


def test_an_official_state_dict_loads_and_matches_the_official_forward():
    import attn_lib

    g = torch.Generator().manual_seed(0)
    sd = {k: 0.3 * torch.randn(s, generator=g) for k, s in official_layout(8)}
    block = attn_lib.load_official("van_attention", sd, 8).double().eval()
    assert list(block.state_dict()) == list(sd)
    x = torch.randn(2, 8, 10, 13, generator=g, dtype=torch.float64)
    sd64 = {k: v.double() for k, v in sd.items()}
    with torch.no_grad():
        torch.testing.assert_close(block(x), official_attention_forward(x, sd64), rtol=1e-10, atol=1e-12)
    prefix = "spatial_gating_unit."
    lka = attn_lib.load_official("lka", {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, 8)
    assert torch.equal(lka.conv1.weight, sd["spatial_gating_unit.conv1.weight"])
