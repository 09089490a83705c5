"""The SCConv chapter's derivation checks accept SCConv and SCBottleneck and reject deliberately
broken versions of them."""

import pytest
import torch
from torch import nn

from attn_lib.checks.scconv import (
    check_sc_bottleneck_adds_no_conv_weights,
    check_sc_bottleneck_context_reach,
    check_sc_bottleneck_matches_figure,
    check_sc_bottleneck_matches_formula,
    check_scconv_context_reach,
    check_scconv_matches_formula,
)
from attn_lib.scconv import SCBottleneck, SCConv

SC_CHECKS = [check_scconv_matches_formula, check_scconv_context_reach]
BLOCK_CHECKS = [check_sc_bottleneck_matches_formula, check_sc_bottleneck_matches_figure, check_sc_bottleneck_context_reach,
                check_sc_bottleneck_adds_no_conv_weights]


# ---- broken self-calibrations (each runs, and computes something plausible) -----------------
class GateWithoutIdentity(SCConv):
    """Broken: sigma(X1') instead of sigma(X1 + X1')."""

    def gate(self, x1):
        return torch.sigmoid(self.context(x1))


class IdentityAfterSigmoid(SCConv):
    """Broken: X1 + sigma(X1') instead of sigma(X1 + X1')."""

    def gate(self, x1):
        return x1 + torch.sigmoid(self.context(x1))


class K3K4Swapped(SCConv):
    """Broken: K4 inside the product, K3 after it."""

    def forward(self, x1):
        return self.k3(self.k4(x1) * self.gate(x1))


class NoGate(SCConv):
    """Broken: a plain pair of 3x3 convolutions, K4(K3(X1)); K2 kept only so that names match."""

    def forward(self, x1):
        return self.k4(self.k3(x1)) + 0 * self.context(x1)


def pooling_ignored(m):
    m.k2[0] = nn.Identity()                         # K2 on the full-resolution map: r ignored


def other_upsampling(m):
    m.up_mode = "nearest" if m.variant == "paper" else "bilinear"   # paper <-> official swap


SC_MUTANTS = {
    "gate-without-identity": (GateWithoutIdentity, None, [check_scconv_matches_formula]),
    "identity-after-sigmoid": (IdentityAfterSigmoid, None, [check_scconv_matches_formula]),
    "k3-k4-swapped": (K3K4Swapped, None, [check_scconv_matches_formula]),
    "no-gate": (NoGate, None, SC_CHECKS),
    "pooling-ignored": (SCConv, pooling_ignored, SC_CHECKS),
    "other-upsampling": (SCConv, other_upsampling, [check_scconv_matches_formula]),
}


# ---- broken blocks -----------------------------------------------------------------------------
class HalvesSwapped(SCBottleneck):
    """Broken: [Y1; Y2] fed to conv3 in the other order than the weights expect."""

    def forward(self, x):
        x2 = self.relu(self.bn1_a(self.conv1_a(x)))
        x1 = self.relu(self.bn1_b(self.conv1_b(x)))
        y = torch.cat([self.scconv(x1), self.k1(x2)], dim=1)
        return self.relu(self.bn3(self.conv3(self.relu(y))) + x)


class NoResidual(SCBottleneck):
    """Broken: the shortcut is dropped."""

    def forward(self, x):
        x2 = self.relu(self.bn1_a(self.conv1_a(x)))
        x1 = self.relu(self.bn1_b(self.conv1_b(x)))
        y = torch.cat([self.k1(x2), self.scconv(x1)], dim=1)
        return self.relu(self.bn3(self.conv3(self.relu(y))))


class InputsSwapped(SCBottleneck):
    """Broken: K1 gets conv1_b's output and SCConv gets conv1_a's (the code's halves mislabelled)."""

    def forward(self, x):
        x2 = self.relu(self.bn1_a(self.conv1_a(x)))
        x1 = self.relu(self.bn1_b(self.conv1_b(x)))
        y = torch.cat([self.k1(x1), self.scconv(x2)], dim=1)
        return self.relu(self.bn3(self.conv3(self.relu(y))) + x)


class FullWidthK(SCBottleneck):
    """Broken: the self-calibrated half as wide as the whole bottleneck (extra weights)."""

    def __init__(self, channels, **kwargs):
        super().__init__(channels, **kwargs)
        self.conv1_b = nn.Conv2d(channels, 2 * self.width, 1, bias=False)
        self.bn1_b = nn.BatchNorm2d(2 * self.width)
        self.scconv = SCConv(2 * self.width, stride=self.stride, variant=self.variant)
        self.conv3 = nn.Conv2d(3 * self.width, self.out_channels, 1, bias=False)


def with_scconv(cls, breakage=None):
    """A block whose SCConv is replaced by a broken one of the same width."""

    def breakage_of_block(block):
        block.scconv = cls(block.width, pooling_r=block.pooling_r, stride=block.stride, variant=block.variant)
        if breakage is not None:
            breakage(block.scconv)

    return breakage_of_block


BLOCK_MUTANTS = {
    "block-gate-without-identity": (SCBottleneck, with_scconv(GateWithoutIdentity), [check_sc_bottleneck_matches_formula]),
    "block-k3-k4-swapped": (SCBottleneck, with_scconv(K3K4Swapped), [check_sc_bottleneck_matches_formula]),
    "block-no-gate": (SCBottleneck, with_scconv(NoGate), [check_sc_bottleneck_matches_formula, check_sc_bottleneck_context_reach]),
    "block-pooling-ignored": (SCBottleneck, with_scconv(SCConv, pooling_ignored), [check_sc_bottleneck_matches_formula, check_sc_bottleneck_context_reach]),
    "block-other-upsampling": (SCBottleneck, with_scconv(SCConv, other_upsampling), [check_sc_bottleneck_matches_formula]),
    "halves-swapped": (HalvesSwapped, None, [check_sc_bottleneck_matches_formula, check_sc_bottleneck_matches_figure]),
    "inputs-swapped": (InputsSwapped, None, [check_sc_bottleneck_matches_formula, check_sc_bottleneck_matches_figure]),
    "no-residual": (NoResidual, None, [check_sc_bottleneck_matches_formula, check_sc_bottleneck_matches_figure]),
    "full-width-sc-half": (FullWidthK, None, [check_sc_bottleneck_adds_no_conv_weights]),
}


@pytest.mark.parametrize("variant", SCConv.VARIANTS)
@pytest.mark.parametrize("check", SC_CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_scconv(variant, check):
    check(SCConv(6, variant=variant))
    check(SCConv(6, stride=2, variant=variant))


@pytest.mark.parametrize("variant", SCBottleneck.VARIANTS)
@pytest.mark.parametrize("check", BLOCK_CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_sc_bottleneck(variant, check):
    check(SCBottleneck(16, variant=variant))
    check(SCBottleneck(16, out_channels=24, stride=2, variant=variant))


def test_ceil_mode_matches_formula_and_accepts_small_maps():
    for variant in SCConv.VARIANTS:
        check_scconv_matches_formula(SCConv(6, ceil_mode=True, variant=variant))
        assert SCConv(6, ceil_mode=True, variant=variant).eval()(torch.randn(1, 6, 1, 3)).shape == (1, 6, 1, 3)
        assert SCBottleneck(16, ceil_mode=True, variant=variant).eval()(torch.randn(1, 16, 3, 2)).shape == (1, 16, 3, 2)


def test_maps_smaller_than_r_work_with_the_whole_axis_as_window():
    """Issue 8: SCConv with r = 4 on a 3 x 3 map. The official nn.AvgPool2d(4) fails there; here an
    axis shorter than r is pooled whole, which is what ceil_mode and adaptive pooling give too,
    and what the official code computes on an r x r map (T1 = the mean)."""
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    for variant in SCConv.VARIANTS:
        m = SCConv(6, variant=variant).double().eval()
        ceil = SCConv(6, ceil_mode=True, variant=variant).double().eval()
        ceil.load_state_dict(m.state_dict())
        with torch.no_grad():
            t1 = m.k2[0](x)
            torch.testing.assert_close(t1, x.mean((2, 3), keepdim=True), rtol=0, atol=1e-15)
            torch.testing.assert_close(t1, torch.nn.functional.adaptive_avg_pool2d(x, 1), rtol=0, atol=1e-15)
            torch.testing.assert_close(m(x), ceil(x), rtol=0, atol=0)
        x3 = torch.randn(2, 6, 3, 9, dtype=torch.float64)                  # one short axis, one long
        with torch.no_grad():
            torch.testing.assert_close(m.k2[0](x3), torch.nn.functional.avg_pool2d(x3, (3, 4)), rtol=0, atol=0)
    for cls in (SCConv, SCBottleneck):
        for hw in [(3, 3), (1, 1), (3, 8), (2, 5)]:
            assert cls(16).eval()(torch.randn(1, 16, *hw)).shape == (1, 16, *hw)


def test_maps_of_at_least_r_pool_as_the_official_avgpool():
    """Where the official code works, the pooling is nn.AvgPool2d(r) exactly (floor mode)."""
    m = SCConv(4, variant="official").double().eval()
    for hw in [(4, 4), (7, 9), (13, 18), (16, 16)]:
        x = torch.randn(2, 4, *hw, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(m.k2[0](x), nn.AvgPool2d(4)(x), rtol=0, atol=0)


@pytest.mark.parametrize("cls", [SCConv, SCBottleneck], ids=lambda c: c.__name__)
def test_batch_of_one_that_pools_to_one_value_is_refused_in_training(cls):
    """BatchNorm after K2 on a 1 x 1 pooled map of one sample cannot train: a ValueError naming the
    module and the shape, not PyTorch's error from inside; eval mode and two samples work."""
    for hw in [(4, 4), (3, 3), (1, 1), (7, 5)]:
        x = torch.randn(1, 16, *hw)
        with pytest.raises(ValueError) as info:
            cls(16).train()(x)
        assert cls.__name__ in str(info.value) and str(tuple(x.shape)) in str(info.value), str(info.value)
        assert cls(16).eval()(x).shape == x.shape
        assert cls(16).train()(torch.randn(2, 16, *hw)).shape == (2, 16, *hw)
    assert cls(16).train()(torch.randn(1, 16, 8, 4)).shape == (1, 16, 8, 4)      # pools to 2 x 1


def test_official_state_dict_order_is_the_official_one():
    """scnet.py @ c0b5bd6 registers SCConv's k2 (pool, conv, BN), k3, k4, and SCBottleneck's
    conv1_a, bn1_a, conv1_b, bn1_b, k1, scconv, conv3, bn3, downsample."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    sc = ["k2.1.weight"] + [f"k2.2.{k}" for k in bn] + ["k3.0.weight"] + [f"k3.1.{k}" for k in bn] \
        + ["k4.0.weight"] + [f"k4.1.{k}" for k in bn]
    assert list(SCConv(8, variant="official").state_dict()) == sc
    block = ["conv1_a.weight"] + [f"bn1_a.{k}" for k in bn] + ["conv1_b.weight"] + [f"bn1_b.{k}" for k in bn] \
        + ["k1.0.weight"] + [f"k1.1.{k}" for k in bn] + [f"scconv.{k}" for k in sc] + ["conv3.weight"] \
        + [f"bn3.{k}" for k in bn] + ["downsample.0.weight"] + [f"downsample.1.{k}" for k in bn]
    assert list(SCBottleneck(16, out_channels=32, variant="official").state_dict()) == block


def test_stride_two_halves_the_map():
    x = torch.randn(1, 16, 33, 15)
    assert SCConv(16, stride=2)(x).shape == (1, 16, 17, 8)
    assert SCBottleneck(16, stride=2)(x).shape == (1, 16, 17, 8)


def test_official_variant_upsamples_like_the_released_code():
    """The released code calls F.interpolate(k2(x), size) with its default mode (nearest)."""
    x = torch.randn(1, 4, 13, 18)
    for variant in SCConv.VARIANTS:
        m = SCConv(4, variant=variant).eval()
        with torch.no_grad():
            released = torch.nn.functional.interpolate(m.k2(x), x.shape[-2:])
            assert torch.equal(m.context(x), released) == (variant == "official")


@pytest.mark.parametrize("mutant", list(SC_MUTANTS), ids=str)
def test_checks_reject_broken_scconv(mutant):
    cls, breakage, checks = SC_MUTANTS[mutant]
    for variant in SCConv.VARIANTS:
        broken = cls(6, variant=variant)
        if breakage is not None:
            breakage(broken)
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)


@pytest.mark.parametrize("mutant", list(BLOCK_MUTANTS), ids=str)
def test_checks_reject_broken_sc_bottleneck(mutant):
    cls, breakage, checks = BLOCK_MUTANTS[mutant]
    for variant in SCBottleneck.VARIANTS:
        broken = cls(16, variant=variant)
        if breakage is not None:
            breakage(broken)
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)
