"""The RGA chapter's derivation checks accept RGA-S and RGA-C and reject broken versions of them."""

import pytest
import torch
from einops.layers.torch import Reduce
from torch import nn

import attn_lib
from attn_lib.checks.rga import (
    _prepared,
    check_rga_depends_on_own_relations,
    check_rga_half_precision,
    check_rga_is_a_gate,
    check_rga_joint_is_the_composition,
    check_rga_matches_formula,
    check_rga_matches_official_replay,
    check_rga_relation_vectors,
    official_forward,
)
from attn_lib.rga import RGA, RGAChannel, RGASpatial, convert_official_state_dict, official_branch

CHECKS = [check_rga_matches_formula, check_rga_relation_vectors, check_rga_depends_on_own_relations,
          check_rga_is_a_gate, check_rga_matches_official_replay, check_rga_half_precision]
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


class GateInOwnDtype:
    """Broken: the gate computed in the input's dtype (float16 for a float16 module), with no
    float32 path; exact in float64."""

    def forward(self, x):
        return x * self.attention(x)


def no_sigmoid(m):
    m.sigmoid = nn.Identity()


def max_pool(m):
    spatial = isinstance(m, RGASpatial)
    m.pool = Reduce("b k h w -> b 1 h w" if spatial else "b k c 1 -> b 1 c 1", "max").forward   # hides the method


def no_relu_on_qk(m):
    units = m.units()
    units["query"][-1] = nn.Identity()
    units["key"][-1] = nn.Identity()


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
    "gate-in-float16": (GateInOwnDtype, None, [check_rga_half_precision]),
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
        with torch.no_grad():
            broken(torch.randn(2, 6, *KWARGS["spatial_size"]))     # the mutant runs: it fails the checks, not Python
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


def test_gate_in_float16_passes_the_float64_checks():
    """Only the float16 check can see that bug."""
    for cls in CLASSES:
        for variant in cls.VARIANTS:
            for check in CHECKS:
                if check is not check_rga_half_precision:
                    check(build(cls, variant, GateInOwnDtype))


OFFICIAL_ORDER = ["gx", "gg", "W", "theta", "phi"]


@pytest.mark.parametrize("cls, branch", [(RGASpatial, "spatial"), (RGAChannel, "channel")])
def test_layers_carry_the_official_names_in_the_official_order(cls, branch):
    """rga_modules.py at cdc9965 registers gx, gg, W, theta, phi (432d950 moved theta and phi last)."""
    m = cls(16, spatial_size=(4, 5), variant="official")
    assert [name for name, _ in m.named_children() if name != "sigmoid"] == [f"{n}_{branch}" for n in OFFICIAL_ORDER]
    keys = list(m.state_dict())
    assert keys[0] == f"gx_{branch}.0.weight" and keys[-1] == f"phi_{branch}.1.num_batches_tracked"
    assert f"W_{branch}.3.weight" in keys and f"W_{branch}.4.running_var" in keys


def test_a_state_dict_of_both_branches_is_refused_whole_and_loads_by_branch():
    """RGA_Module(use_spatial=True, use_channel=True) holds both branches: load_official refuses
    the whole state dict (naming the other branch's keys), official_branch splits it."""
    torch.manual_seed(0)
    s_off = RGASpatial(64, spatial_size=(4, 5), variant="official")
    c_off = RGAChannel(64, spatial_size=(4, 5), variant="official")
    both = {}
    for a, b in zip(s_off.state_dict().items(), c_off.state_dict().items()):
        both["backbone.rga_att1." + a[0]] = a[1]
        both["backbone.rga_att1." + b[0]] = b[1]
    whole = {k[len("backbone.rga_att1."):]: v for k, v in both.items()}
    with pytest.raises(ValueError, match="gx_channel.0.weight"):
        attn_lib.load_official("rga_spatial", whole, 64, spatial_size=(4, 5))
    for name, ref, branch in (("rga_spatial", s_off, "spatial"), ("rga_channel", c_off, "channel")):
        part = official_branch(both, branch, "backbone.rga_att1.")
        assert list(part) == list(ref.state_dict())
        m = attn_lib.load_official(name, part, 64, spatial_size=(4, 5))
        for key, value in ref.state_dict().items():
            assert torch.equal(m.state_dict()[key], value), key
    assert convert_official_state_dict(whole) == whole                       # the converter keeps every key
    with pytest.raises(ValueError, match="branch"):
        official_branch(whole, "both")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_float16_module_in_train_mode_updates_its_batchnorm_statistics(cls):
    """The float32 gate of a float16 module still updates the float16 running statistics."""
    m = cls(6, variant="official", **KWARGS).half().train()
    ref = cls(6, variant="official", **KWARGS).train()
    ref.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in m.state_dict().items()})
    x = torch.randn(3, 6, *KWARGS["spatial_size"])
    with torch.no_grad():
        m(x.half())
        ref(x.half().float())
    for (key, a), b in zip(m.state_dict().items(), ref.state_dict().values()):
        if key.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(a.float(), b, rtol=2e-3, atol=2e-3)
        elif key.endswith("num_batches_tracked"):
            assert a.item() == b.item() == 1, key


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_min_width_clamps_every_width(cls):
    m = cls(16, spatial_size=(2, 2), min_width=4)
    for unit in m.units().values():
        for layer in unit:
            if isinstance(layer, nn.Conv2d) and layer.out_channels != 1:
                assert layer.out_channels >= 4
    with pytest.raises(ValueError, match="min_width"):
        cls(16, spatial_size=(2, 2), min_width=0)


@pytest.mark.parametrize("cls, shape", [(RGASpatial, (1, 6, 1, 1)), (RGAChannel, (1, 1, 4, 5))])
def test_official_batchnorms_refuse_one_value_per_channel_in_training(cls, shape):
    m = cls(shape[1], spatial_size=shape[2:], variant="official").train()
    with pytest.raises(ValueError, match=rf"{cls.__name__} .*got \({shape[0]}, {shape[1]}, {shape[2]}, {shape[3]}\)"):
        m(torch.randn(*shape))
    m.eval()(torch.randn(*shape))                                          # eval mode works
    cls(shape[1], spatial_size=shape[2:]).train()(torch.randn(*shape))     # no BatchNorm in the paper variant


# --- the joint module, RGA-C(RGA-S(x)) ("rga") ----------------------------------------------
class ChannelFirstRGA(RGA):
    """Broken: RGA-S(RGA-C(x)), the channel gate first."""

    def forward(self, x):
        xc = x * self.gate(x, False)
        return xc * self.gate(xc, True)


class SharedInputRGA(RGA):
    """Broken: both gates computed from the input x (in parallel), not the channel gate from
    the spatially gated map."""

    def forward(self, x):
        return x * self.gate(x, True) * self.gate(x, False)


@pytest.mark.parametrize("variant", RGA.VARIANTS)
def test_joint_check_accepts_rga(variant):
    check_rga_joint_is_the_composition(RGA(6, variant=variant, **KWARGS))
    check_rga_joint_is_the_composition(RGA(64, spatial_size=(4, 5), variant=variant))


@pytest.mark.parametrize("variant", RGA.VARIANTS)
@pytest.mark.parametrize("mutant", [ChannelFirstRGA, SharedInputRGA], ids=lambda c: c.__name__)
def test_joint_check_rejects_broken_rga(mutant, variant):
    with pytest.raises(AssertionError):
        check_rga_joint_is_the_composition(mutant(6, variant=variant, **KWARGS))


def test_joint_module_has_the_official_interleaved_order_and_loads_both_branches():
    """RGA_Module(use_spatial=True, use_channel=True).__init__ interleaves the branches."""
    m = RGA(16, spatial_size=(4, 5), variant="official")
    order = [f"{n}_{b}" for n in ("gx", "gg", "W") for b in ("spatial", "channel")]
    order += ["theta_spatial", "phi_spatial", "theta_channel", "phi_channel"]
    assert [name for name, _ in m.named_children() if name != "sigmoid"] == order
    s = RGASpatial(16, spatial_size=(4, 5), variant="official")
    c = RGAChannel(16, spatial_size=(4, 5), variant="official")
    assert sorted(m.state_dict()) == sorted([*s.state_dict(), *c.state_dict()])
    whole = {k: torch.randn(v.shape) if v.is_floating_point() else v for k, v in m.state_dict().items()}
    loaded = attn_lib.load_official("rga", whole, 16, spatial_size=(4, 5))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in whole.items())


def test_joint_module_in_float16_tracks_the_float32_composition():
    m, _ = _prepared(RGA(6, variant="official", **KWARGS), seed=3)
    m = m.float()
    x = torch.randn(2, 6, *KWARGS["spatial_size"]) * 30
    with torch.no_grad():
        y = m.half()(x.half())
        reference = m.float()(x.half().float())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), reference, rtol=0, atol=1e-2 * reference.abs().max().item())


@pytest.mark.parametrize("cls", CLASSES + [RGA], ids=lambda c: c.__name__)
@pytest.mark.parametrize("kwargs", [{"spatial_size": (4.5, 5)}, {"spatial_size": 4},
                                    {"spatial_size": ("4", 5)}, {"spatial_size": (True, 5)},
                                    {"spatial_size": (4, 5), "cha_ratio": 2.5}],
                         ids=["float-size", "int-size", "str-size", "bool-size", "float-ratio"])
def test_bad_sizes_and_ratios_are_refused_by_name(cls, kwargs):
    """spatial_size=(4.5, 5) used to be truncated to (4, 5) without a word."""
    with pytest.raises(ValueError, match=cls.__name__ + ": (spatial_size|cha_ratio)"):
        cls(16, **kwargs)
