"""The Coordinate Attention chapter's derivation checks accept CoordAttention (every variant and
activation) and reject deliberately broken versions of it."""

import pytest
import torch
from torch import nn

from attn_lib.checks.coord_attention import (
    check_attention_is_rank_one,
    check_coord_attention_matches_formula,
    check_gates_separate_directions,
    check_strips_are_directional_means,
    check_width_and_official_code,
    official_code_forward,
)
from attn_lib.coord_attention import CoordAttention, HSwish, convert_official_state_dict

CHECKS = [
    check_coord_attention_matches_formula,
    check_strips_are_directional_means,
    check_gates_separate_directions,
    check_attention_is_rank_one,
    check_width_and_official_code,
]
C, R = 12, 4          # C // r = 3: width 8 with the default min_width, 3 with min_width=1


class SplitWH(CoordAttention):
    """Broken: splits f as if the concatenation were [z^w; z^h] (sizes [W, H]); runs on any map."""

    def split(self, f, h, w):
        f_w, f_h = torch.split(f, [w, h], dim=2)
        return f_h, f_w


class SeparateTransforms(CoordAttention):
    """Broken: a separate (non-shared) 1x1 convolution and BatchNorm for the column profile."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conv1_w = nn.Conv2d(self.channels, self.hidden, 1, bias=self.variant == "official")
        self.bn1_w = nn.BatchNorm2d(self.hidden)

    def gates(self, x):
        z_h, z_w = self.embed(x)
        f_h = self.act(self.bn1(self.conv1(z_h)))
        f_w = self.act(self.bn1_w(self.conv1_w(z_w)))
        return torch.sigmoid(self.conv_h(f_h)), torch.sigmoid(self.conv_w(self.to_row(f_w)))


class SumOfGates(CoordAttention):
    """Broken: Y = X (s^h + s^w) / 2 instead of the product."""

    def forward(self, x):
        s_h, s_w = self.gates(x)
        return x * (s_h + s_w) / 2


class NoColumnSigmoid(CoordAttention):
    """Broken: the column gate is the raw Conv_w output (no sigmoid)."""

    def gates(self, x):
        s_h, s_w = super().gates(x)
        return s_h, torch.logit(s_w)


class _FixedWidth(CoordAttention):
    """A block whose width follows its own rule, _width(C, r), whatever min_width says."""

    def __init__(self, channels, *, min_width=8, reduction=32, activation="h_swish", variant="paper"):
        super().__init__(channels, reduction=reduction, min_width=min_width, activation=activation, variant=variant)
        width = self._width(channels, reduction)
        bias = variant == "official"
        self.hidden = width
        self.conv1 = nn.Conv2d(channels, width, 1, bias=bias)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv_h = nn.Conv2d(width, channels, 1, bias=bias)
        self.conv_w = nn.Conv2d(width, channels, 1, bias=bias)


class IgnoresMinWidth(_FixedWidth):
    """Broken: the paper's literal max(1, C // r) although min_width=8 was asked (the classic
    port that drops the official floor of 8: at the default r = 32 every C < 256 gets a width
    below 8, down to one channel)."""

    @staticmethod
    def _width(channels, reduction):
        return max(1, channels // reduction)


class HardCodedEight(_FixedWidth):
    """Broken: max(8, C // r) whatever min_width is; caught when min_width=1."""

    @staticmethod
    def _width(channels, reduction):
        return max(8, channels // reduction)


def literal_width(cls):
    """The class built with min_width=1 (the paper's literal C / r)."""
    return lambda *args, **kwargs: cls(*args, min_width=1, **kwargs)


def relu_not_hswish(m):
    m.act = nn.ReLU()


class MaxStrips(CoordAttention):
    """Broken: max instead of mean in the strip pools."""

    def embed(self, x):
        return x.amax(3, keepdim=True), x.amax(2, keepdim=True).transpose(2, 3)


class GatesRegisteredFirst(CoordAttention):
    """Broken for checkpoints: conv_h and conv_w registered before conv1 and bn1 (not the official
    order). Same output; a load by position would pair the wrong tensors."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        conv1, bn1 = self.conv1, self.bn1
        del self.conv1, self.bn1
        self.conv1, self.bn1 = conv1, bn1


def keep(m):
    return None


MUTANTS = {
    "relu-not-hswish": (CoordAttention, relu_not_hswish,
                        [check_coord_attention_matches_formula, check_width_and_official_code]),
    "split-w-h": (SplitWH, keep, [check_coord_attention_matches_formula, check_gates_separate_directions]),
    "separate-transforms": (SeparateTransforms, keep, [check_coord_attention_matches_formula]),
    "max-strips": (MaxStrips, keep, [check_coord_attention_matches_formula, check_strips_are_directional_means]),
    "gates-registered-first": (GatesRegisteredFirst, keep, [check_width_and_official_code]),
    "sum-of-gates": (SumOfGates, keep, [check_coord_attention_matches_formula, check_attention_is_rank_one]),
    "ignores-min-width": (IgnoresMinWidth, keep, [check_width_and_official_code]),
    "hard-coded-eight": (literal_width(HardCodedEight), keep, [check_width_and_official_code]),
    "no-column-sigmoid": (NoColumnSigmoid, keep, [check_coord_attention_matches_formula, check_attention_is_rank_one]),
}


@pytest.mark.parametrize("min_width", [8, 1])
@pytest.mark.parametrize("variant", CoordAttention.VARIANTS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_coord_attention(variant, check, min_width):
    for activation in CoordAttention.ACTIVATIONS:
        check(CoordAttention(C, reduction=R, min_width=min_width, activation=activation, variant=variant))


@pytest.mark.parametrize("variant", CoordAttention.VARIANTS)
def test_width_is_max_min_width_c_over_r(variant):
    assert CoordAttention(C, reduction=R, min_width=8, variant=variant).hidden == 8
    assert CoordAttention(C, reduction=R, min_width=1, variant=variant).hidden == 3
    assert CoordAttention(16, variant=variant, min_width=1).hidden == 1          # C // r = 0, clamped
    assert CoordAttention(512, variant=variant).hidden == 16                      # the floor no longer matters


def test_default_width_is_the_papers_and_the_official_codes():
    """issue 8: the paper variant uses the paper's C / r, the official one the code's max(8, C // r)."""
    assert CoordAttention(C, reduction=R).hidden == C // R == 3
    assert CoordAttention(C, reduction=R, variant="official").hidden == 8
    assert CoordAttention(16).hidden == 1 and CoordAttention(16, variant="official").hidden == 8


@pytest.mark.parametrize("bad", [0, -1, 2.0, "8", True])
def test_min_width_is_validated(bad):
    with pytest.raises(ValueError, match="CoordAttention"):
        CoordAttention(C, min_width=bad)


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_coord_attention(mutant):
    cls, breakage, checks = MUTANTS[mutant]
    for variant in CoordAttention.VARIANTS:
        broken = cls(C, reduction=R, variant=variant)
        breakage(broken)
        with torch.no_grad():
            broken.eval()(torch.randn(2, C, 5, 7))      # the mutant runs on a non-square map
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)


def test_swapped_split_is_caught_on_square_maps_too():
    """On a square map the [W, H] split swaps the two gates; the formula check still sees it."""
    broken = SplitWH(C, reduction=R)
    with pytest.raises(AssertionError):
        check_coord_attention_matches_formula(broken, size=(2, 6, 6))


@pytest.mark.parametrize("layout,names", [("coordatt.py", ("conv_h", "conv_w")), ("mbv2_ca.py", ("conv2", "conv3"))])
def test_official_layouts_load_and_match_the_official_forward(layout, names):
    """State dicts with the key names, shapes and order of coordatt.py / mbv2_ca.py @ 7619bea."""
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)
    gate_h, gate_w = names
    state = {"conv1.weight": rand(8, 24, 1, 1), "conv1.bias": rand(8), "bn1.weight": rand(8), "bn1.bias": rand(8),
             "bn1.running_mean": rand(8), "bn1.running_var": torch.rand(8, generator=g, dtype=torch.float64) + 0.5,
             "bn1.num_batches_tracked": torch.tensor(3), f"{gate_h}.weight": rand(24, 8, 1, 1),
             f"{gate_h}.bias": rand(24), f"{gate_w}.weight": rand(24, 8, 1, 1), f"{gate_w}.bias": rand(24)}
    block = CoordAttention(24, variant="official").double().eval()
    converted = convert_official_state_dict(state)
    assert list(converted) == list(block.state_dict())
    block.load_state_dict(converted, strict=True)
    x = torch.randn(2, 24, 5, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(block(x), official_code_forward(state, x, layout), rtol=1e-10, atol=1e-12)


def test_converter_keeps_the_part_before_the_block():
    key = "features.2.conv.6.conv3.bias"
    assert list(convert_official_state_dict({key: None, "features.2.conv.6.conv1.weight": None})) == [
        "features.2.conv.6.conv_w.bias", "features.2.conv.6.conv1.weight"]


def test_hswish_is_the_official_formula():
    t = torch.linspace(-5, 5, 1001, dtype=torch.float64)
    torch.testing.assert_close(HSwish()(t), t * (torch.nn.functional.relu6(t + 3) / 6), rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("hw", [(1, 1), (1, 9), (7, 1)])
def test_small_maps_and_a_batch_of_one_train(hw):
    m = CoordAttention(C, reduction=R, variant="official").train()
    y = m(torch.randn(1, C, *hw))
    assert y.shape == (1, C, *hw) and torch.isfinite(y).all()
