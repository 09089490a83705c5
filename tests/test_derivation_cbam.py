"""The CBAM chapter's derivation checks accept CBAM and reject broken CBAM ports (the
mistakes that its section "Derivation checks" names)."""

import copy

import pytest
import torch
from torch import nn

from attn_lib.cbam import CBAM, ChannelGate, SpatialGate, convert_official_state_dict
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


def square_window_descriptors(f):
    """Broken: a max pool that is not global. `F.max_pool2d(x, x.size(2))` on a map wider than
    high sees only the first H columns."""
    return torch.cat([f.mean((2, 3)), f[..., : f.shape[2]].amax(dim=(2, 3))])


class TwoMLPChannelGate(ChannelGate):
    """Broken: separate MLPs for the average and the max descriptor."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mlp_max = copy.deepcopy(self.mlp)

    def forward(self, f):
        logits = self.mlp(f.mean((2, 3))) + self.mlp_max(f.amax((2, 3)))
        return torch.sigmoid(logits)[:, :, None, None]


class AvgTwiceChannelGate(ChannelGate):
    """Broken: `x1 + x1`, the average descriptor used twice and the max one never."""

    def forward(self, f):
        x1 = self.mlp(f.mean((2, 3)))
        return torch.sigmoid(x1 + x1)[:, :, None, None]


class NoSigmoidChannelGate(ChannelGate):
    """Broken: the channel logits used as the gain."""

    def forward(self, f):
        B = f.shape[0]
        logits = self.mlp(self.descriptors(f))
        return (logits[:B] + logits[B:])[:, :, None, None]


class NoSigmoidSpatialGate(SpatialGate):
    """Broken: the spatial logits used as the gain."""

    def forward(self, f):
        return self.bn(self.conv(self.pooled(f)))


class SpatialFirstCBAM(CBAM):
    """Broken: the spatial gate applied before the channel gate."""

    def forward(self, f):
        f_s = self.spatial_gate(f) * f
        return self.channel_gate(f_s) * f_s


def gate_args(m):
    return dict(channels=m.channels, reduction=m.reduction, bias=m.variant == "official")


def non_global_max(m):
    m.channel_gate.descriptors = square_window_descriptors        # an instance attribute hides the method


def two_mlps(m):
    m.channel_gate = TwoMLPChannelGate(**gate_args(m))


def avg_twice(m):
    m.channel_gate = AvgTwiceChannelGate(**gate_args(m))


def _swap_class(module, cls):
    """Give `module` the methods of `cls` (a subclass of its class), keeping its weights."""
    module.__class__ = cls


def no_channel_sigmoid(m):
    _swap_class(m.channel_gate, NoSigmoidChannelGate)


def no_spatial_sigmoid(m):
    _swap_class(m.spatial_gate, NoSigmoidSpatialGate)


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


def test_min_width():
    assert CBAM(16, min_width=8).channel_gate.mlp[0].out_features == 8
    assert CBAM(256, min_width=8).channel_gate.mlp[0].out_features == 16
    for check in CHECKS:
        check(CBAM(16, min_width=8))
    with pytest.raises(ValueError, match="min_width"):
        CBAM(16, min_width=0)


def test_official_initialisation_is_the_one_of_model_resnet():
    """MODELS/model_resnet.py, ResNet.__init__: conv weights kaiming_normal(fan_out), BatchNorm
    weights under SpatialGate 0, every bias 0; so the spatial gate starts at 1/2 everywhere."""
    torch.manual_seed(0)
    m = CBAM(64, variant="official")
    bn = m.spatial_gate.bn
    assert bn.weight.item() == 0 and bn.bias.item() == 0
    assert all(torch.equal(m.channel_gate.mlp[i].bias, torch.zeros(m.channel_gate.mlp[i].out_features))
               for i in (0, 2))
    assert 0.75 < m.spatial_gate.conv.weight.std().item() / (2 / 49) ** 0.5 < 1.33
    x = torch.randn(2, 64, 7, 9)
    for mode in (False, True):
        with torch.no_grad():
            m_s = m.train(mode).spatial_gate(x)
        torch.testing.assert_close(m_s, torch.full_like(m_s, 0.5))
    paper = CBAM(64)                                   # PyTorch's default: kaiming_uniform(a=sqrt(5))
    assert 0.75 < paper.spatial_gate.conv.weight.std().item() / (1 / (3 * 98)) ** 0.5 < 1.33


def test_official_refuses_one_value_per_batchnorm_channel_in_training():
    m = CBAM(16, variant="official").train()
    x = torch.randn(1, 16, 1, 1)
    with pytest.raises(ValueError, match=r"CBAM.*\(1, 16, 1, 1\)"):
        m(x)
    assert m(torch.randn(1, 16, 2, 1)).shape == (1, 16, 2, 1)
    assert CBAM(16).train()(x).shape == x.shape           # the paper variant has no BatchNorm
    assert m.eval()(x).shape == x.shape


# MODELS/cbam.py at 459efad, CBAM(gate_channels=C, reduction_ratio=r): keys, shapes, order
def official_layout(c, r):
    k = c // r
    return [("ChannelGate.mlp.1.weight", (k, c)), ("ChannelGate.mlp.1.bias", (k,)),
            ("ChannelGate.mlp.3.weight", (c, k)), ("ChannelGate.mlp.3.bias", (c,)),
            ("SpatialGate.spatial.conv.weight", (1, 2, 7, 7)),
            ("SpatialGate.spatial.bn.weight", (1,)), ("SpatialGate.spatial.bn.bias", (1,)),
            ("SpatialGate.spatial.bn.running_mean", (1,)), ("SpatialGate.spatial.bn.running_var", (1,)),
            ("SpatialGate.spatial.bn.num_batches_tracked", ())]


def official_cbam_forward(x, sd, eps=1e-5):
    """CBAM.forward of MODELS/cbam.py (eval mode), written out."""
    def mlp(v):
        h = torch.relu(v @ sd["ChannelGate.mlp.1.weight"].T + sd["ChannelGate.mlp.1.bias"])
        return h @ sd["ChannelGate.mlp.3.weight"].T + sd["ChannelGate.mlp.3.bias"]

    avg = nn.functional.avg_pool2d(x, (x.size(2), x.size(3))).flatten(1)
    mx = nn.functional.max_pool2d(x, (x.size(2), x.size(3))).flatten(1)
    x = x * torch.sigmoid(mlp(avg) + mlp(mx))[:, :, None, None]
    pooled = torch.cat([torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)], dim=1)
    s = nn.functional.conv2d(pooled, sd["SpatialGate.spatial.conv.weight"], padding=3)
    bn = "SpatialGate.spatial.bn."
    s = (s - sd[bn + "running_mean"]) / torch.sqrt(sd[bn + "running_var"] + eps) * sd[bn + "weight"] + sd[bn + "bias"]
    return x * torch.sigmoid(s)


def test_an_official_state_dict_loads_and_matches_the_official_forward():
    import attn_lib

    g = torch.Generator().manual_seed(0)
    sd = {k: 0.5 * torch.randn(s, generator=g) for k, s in official_layout(32, 8)}
    sd["SpatialGate.spatial.bn.running_var"] = torch.rand(1, generator=g) + 0.5
    sd["SpatialGate.spatial.bn.num_batches_tracked"] = torch.tensor(7)
    block = attn_lib.load_official("cbam", sd, 32, reduction=8).double().eval()
    assert list(convert_official_state_dict(sd)) == list(block.state_dict())
    x = torch.randn(2, 32, 7, 9, generator=g, dtype=torch.float64)
    sd64 = {k: v.double() for k, v in sd.items()}
    with torch.no_grad():
        torch.testing.assert_close(block(x), official_cbam_forward(x, sd64), rtol=1e-10, atol=1e-12)
    network = {"module.layer1.0.cbam." + k: v for k, v in sd.items()}     # a DataParallel checkpoint
    one = {k[len("module.layer1.0.cbam."):]: v for k, v in network.items() if k.startswith("module.layer1.0.cbam.")}
    assert torch.equal(attn_lib.load_official("cbam", one, 32, reduction=8).spatial_gate.conv.weight,
                       sd["SpatialGate.spatial.conv.weight"])
