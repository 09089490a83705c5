"""The Coordinate Attention chapter's derivation checks accept CoordAttention (every variant and
activation) and reject deliberately broken versions of it."""

import pytest
import torch
from einops.layers.torch import Reduce
from torch import nn

from attn_lib.checks.coord_attention import (
    check_attention_is_rank_one,
    check_coord_attention_matches_formula,
    check_gates_separate_directions,
    check_strips_are_directional_means,
    check_width_and_official_code,
)
from attn_lib.coord_attention import CoordAttention

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
    """Broken: the paper's literal max(1, C // r), with min_width=8 (the PITFALLS.md item: no floor of 8)."""

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


def max_strips(m):
    m.pool_h = Reduce("b c h w -> b c h 1", "max")
    m.pool_w = Reduce("b c h w -> b c w 1", "max")


def keep(m):
    return None


MUTANTS = {
    "relu-not-hswish": (CoordAttention, relu_not_hswish,
                        [check_coord_attention_matches_formula, check_width_and_official_code]),
    "split-w-h": (SplitWH, keep, [check_coord_attention_matches_formula, check_gates_separate_directions]),
    "separate-transforms": (SeparateTransforms, keep, [check_coord_attention_matches_formula]),
    "max-strips": (CoordAttention, max_strips,
                   [check_coord_attention_matches_formula, check_strips_are_directional_means]),
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
def test_width_is_max_min_width_c_over_r_in_both_variants(variant):
    assert CoordAttention(C, reduction=R, variant=variant).hidden == 8
    assert CoordAttention(C, reduction=R, min_width=1, variant=variant).hidden == 3
    assert CoordAttention(16, variant=variant, min_width=1).hidden == 1          # C // r = 0, clamped
    assert CoordAttention(512, variant=variant).hidden == 16                      # the floor no longer matters


@pytest.mark.parametrize("bad", [0, -1, 2.0, "8", True, None])
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
