"""The CBAM chapter's derivation checks accept CBAM and reject broken CBAM ports (PITFALLS.md)."""

import copy

import pytest
import torch
from torch import nn

from attn_lib.cbam import CBAM, ChannelGate, convert_official_state_dict
from attn_lib.checks.cbam import (
    check_cbam_channel_mlp_is_shared,
    check_cbam_gate_properties,
    check_cbam_is_channel_then_spatial,
    check_cbam_matches_formula,
)

CHECKS = [
    check_cbam_matches_formula,
    check_cbam_channel_mlp_is_shared,
    check_cbam_gate_properties,
    check_cbam_is_channel_then_spatial,
]
C, R = 12, 3


class SquareWindowMax(nn.Module):
    """Broken: a max pool that is not global. `F.max_pool2d(x, x.size(2))` on a map wider than
    high sees only the first H columns."""

    def forward(self, f):
        return f[..., : f.shape[2]].amax(dim=(2, 3))


class TwoMLPChannelGate(ChannelGate):
    """Broken: separate MLPs for the average and the max descriptor."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mlp_max = copy.deepcopy(self.mlp)

    def forward(self, f):
        return self.expand(self.sigmoid(self.mlp(self.avg_pool(f)) + self.mlp_max(self.max_pool(f))))


class AvgTwiceChannelGate(ChannelGate):
    """Broken: `x1 + x1`, the average descriptor used twice and the max one never."""

    def forward(self, f):
        x1 = self.mlp(self.avg_pool(f))
        return self.expand(self.sigmoid(x1 + x1))


class SpatialFirstCBAM(CBAM):
    """Broken: the spatial gate applied before the channel gate."""

    def forward(self, f):
        f_s = self.spatial_gate(f) * f
        return self.channel_gate(f_s) * f_s


def gate_args(m):
    return dict(channels=m.channels, reduction=m.reduction, bias=m.variant == "official")


def non_global_max(m):
    m.channel_gate.max_pool = SquareWindowMax()


def two_mlps(m):
    m.channel_gate = TwoMLPChannelGate(**gate_args(m))


def avg_twice(m):
    m.channel_gate = AvgTwiceChannelGate(**gate_args(m))


def no_channel_sigmoid(m):
    m.channel_gate.sigmoid = nn.Identity()


def no_spatial_sigmoid(m):
    m.spatial_gate.sigmoid = nn.Identity()


def swapped_pool_order(m):
    m.spatial_gate.max_first = not m.spatial_gate.max_first


def official_parts_in_the_wrong_variant(m):
    """The paper variant with MLP biases and a BatchNorm, the official one without (variants swapped)."""
    for i in (0, 2):
        lin = m.channel_gate.mlp[i]
        m.channel_gate.mlp[i] = nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is None)
    official = isinstance(m.spatial_gate.bn, nn.BatchNorm2d)
    m.spatial_gate.bn = nn.Identity() if official else nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)


MUTANTS = {
    "non-global-max": (CBAM, non_global_max, [check_cbam_matches_formula, check_cbam_channel_mlp_is_shared,
                                              check_cbam_gate_properties]),
    "two-mlps": (CBAM, two_mlps, [check_cbam_matches_formula, check_cbam_channel_mlp_is_shared]),
    "x1-plus-x1": (CBAM, avg_twice, [check_cbam_matches_formula, check_cbam_channel_mlp_is_shared]),
    "no-channel-sigmoid": (CBAM, no_channel_sigmoid, [check_cbam_matches_formula, check_cbam_channel_mlp_is_shared,
                                                      check_cbam_gate_properties]),
    "no-spatial-sigmoid": (CBAM, no_spatial_sigmoid, [check_cbam_matches_formula, check_cbam_gate_properties]),
    "spatial-first": (SpatialFirstCBAM, lambda m: None, [check_cbam_matches_formula,
                                                         check_cbam_is_channel_then_spatial]),
    "paper-official-pool-order-swap": (CBAM, swapped_pool_order, [check_cbam_matches_formula]),
    "paper-official-parts-swap": (CBAM, official_parts_in_the_wrong_variant, [check_cbam_matches_formula]),
}


@pytest.mark.parametrize("variant", CBAM.VARIANTS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_cbam(variant, check):
    check(CBAM(C, reduction=R, variant=variant))


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_cbam(mutant):
    cls, breakage, checks = MUTANTS[mutant]
    for variant in CBAM.VARIANTS:
        broken = cls(C, reduction=R, variant=variant)
        breakage(broken)
        with torch.no_grad():
            broken(torch.randn(2, C, 5, 7))          # the mutant runs: it fails the checks, not Python
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)


def test_variants_have_the_official_parameter_set():
    shapes = {n: tuple(p.shape) for n, p in CBAM(64, variant="official").state_dict().items()}
    official = {                                   # MODELS/cbam.py, CBAM(64), reduction_ratio=16
        "ChannelGate.mlp.1.weight": (4, 64), "ChannelGate.mlp.1.bias": (4,),
        "ChannelGate.mlp.3.weight": (64, 4), "ChannelGate.mlp.3.bias": (64,),
        "SpatialGate.spatial.conv.weight": (1, 2, 7, 7),
        "SpatialGate.spatial.bn.weight": (1,), "SpatialGate.spatial.bn.bias": (1,),
        "SpatialGate.spatial.bn.running_mean": (1,), "SpatialGate.spatial.bn.running_var": (1,),
        "SpatialGate.spatial.bn.num_batches_tracked": (),
    }
    assert {k: v for k, v in convert_official_state_dict(official).items()} == shapes
    bn = CBAM(64, variant="official").spatial_gate.bn
    assert (bn.eps, bn.momentum, bn.affine) == (1e-5, 0.01, True)
    paper = {n: tuple(p.shape) for n, p in CBAM(64).named_parameters()}
    assert paper == {"channel_gate.mlp.0.weight": (4, 64), "channel_gate.mlp.2.weight": (64, 4),
                     "spatial_gate.conv.weight": (1, 2, 7, 7)}


def test_small_channel_counts_and_kernel_size():
    assert CBAM(8).channel_gate.mlp[0].out_features == 1          # max(1, C // r)
    m = CBAM(8, kernel_size=3)
    assert tuple(m.spatial_gate.conv.weight.shape) == (1, 2, 3, 3)
    for check in CHECKS:
        check(m)
    with pytest.raises(ValueError, match="kernel_size"):
        CBAM(8, kernel_size=4)
