"""The Triplet Attention chapter's derivation checks accept TripletAttention and reject
deliberately broken versions of it."""

import pytest
import torch
from einops.layers.torch import Reduce
from torch import nn

from attn_lib.checks.triplet import (
    check_output_is_average_of_gated_branches,
    check_rotations,
    check_triplet_matches_formula,
    check_triplet_official_code,
    check_zpool_and_maps,
    official_code_forward,
)
from attn_lib.triplet import AttentionGate, Rotate90, TripletAttention, convert_official_state_dict

CHECKS = [check_triplet_matches_formula, check_rotations, check_zpool_and_maps,
          check_output_is_average_of_gated_branches, check_triplet_official_code]


def gates(m):
    return [g for g in (m.hw, m.hc, m.cw) if g is not None]


class MeanTwice(nn.Module):
    """Broken Z-pool: [mean; mean] (no max)."""

    def __init__(self):
        super().__init__()
        self.avg_pool = Reduce("b r p q -> b 1 p q", "mean")

    def forward(self, t):
        mean = self.avg_pool(t)
        return torch.cat([mean, mean], dim=1)


class MeanMax(nn.Module):
    """Broken Z-pool: [mean; max], the order swapped."""

    def forward(self, t):
        return torch.cat([t.mean(1, keepdim=True), t.amax(1, keepdim=True)], dim=1)


class BackwardsRotate(Rotate90):
    """Broken: rotates back with P instead of P^{-1} (same shapes, a half turn in total)."""

    def inverse(self, y):
        return self.swap(y.flip([self.flip_dim]) if self.flip else y)


class HalfAverage(TripletAttention):
    """Broken: divides the sum of three branches by 2."""

    def forward(self, x):
        return super().forward(x) * (3 / 2 if self.hw is not None else 1)


def mean_only(m):
    for g in gates(m):
        g.zpool = MeanTwice()


def mean_max_order(m):
    for g in gates(m):
        g.zpool = MeanMax()


def no_sigmoid(m):
    for g in gates(m):
        g.sigmoid = nn.Identity()


def backwards(m):
    m.rotate_h = BackwardsRotate("h", flip=True)
    m.rotate_w = BackwardsRotate("w", flip=True)


def permute_only(m):                      # the official rotation inside the paper variant
    m.rotate_h.flip = m.rotate_w.flip = False


def drop_batchnorm(m):                    # the paper's gate inside the official variant
    for g in gates(m):
        g.bn = nn.Identity()


class SwappedGates(TripletAttention):
    """Broken: Conv_2's gate applied to X_1 and Conv_1's to X_2."""

    def forward(self, x):
        x_1, x_2 = self.rotate_h(x), self.rotate_w(x)
        y = self.rotate_h.inverse(self.cw(x_1) * x_1) + self.rotate_w.inverse(self.hc(x_2) * x_2)
        return (y + self.hw(x) * x) / 3 if self.hw is not None else y / 2


class GatesInTheOtherOrder(TripletAttention):
    """Broken for checkpoints: the gates registered hc, cw, hw (the first version of this module),
    not in the official order cw, hc, hw. Same output; a load by position swaps the two gates."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cw, hc, hw = self.cw, self.hc, self.hw
        del self.cw, self.hc, self.hw
        self.hc, self.cw, self.hw = hc, cw, hw


class NoSpatialByThree(TripletAttention):
    """Broken no_spatial: drops the identity branch but still divides by 3."""

    def forward(self, x):
        return super().forward(x) * (2 / 3 if self.hw is None else 1)


class NoSpatialKeepsGate(TripletAttention):
    """Broken no_spatial: the identity branch is still added (with a gate built anyway)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra = AttentionGate(self.kernel_size, self.variant == "official")

    def forward(self, x):
        if self.hw is not None:
            return super().forward(x)
        return (2 * super().forward(x) + self.extra(x) * x) / 3


ALL = ("paper", "official")
MUTANTS = {
    # name: (class, breakage, variants it applies to, checks that must reject it)
    "mean-only-zpool": (TripletAttention, mean_only, ALL, [check_triplet_matches_formula, check_zpool_and_maps]),
    "mean-max-order": (TripletAttention, mean_max_order, ALL, [check_triplet_matches_formula, check_zpool_and_maps]),
    "no-sigmoid": (TripletAttention, no_sigmoid, ALL,
                   [check_triplet_matches_formula, check_zpool_and_maps, check_output_is_average_of_gated_branches]),
    "half-average": (HalfAverage, lambda m: None, ALL,
                     [check_triplet_matches_formula, check_output_is_average_of_gated_branches]),
    "P-instead-of-P-inverse": (TripletAttention, backwards, ("paper",), [check_triplet_matches_formula, check_rotations]),
    "permute-not-rotate": (TripletAttention, permute_only, ("paper",), [check_rotations]),
    "official-without-bn": (TripletAttention, drop_batchnorm, ("official",), [check_triplet_matches_formula]),
    "swapped-branch-gates": (SwappedGates, lambda m: None, ALL,
                             [check_triplet_matches_formula, check_triplet_official_code]),
    "gates-in-the-other-order": (GatesInTheOtherOrder, lambda m: None, ALL, [check_triplet_official_code]),
}


NO_SPATIAL_MUTANTS = {
    "no-spatial-divides-by-3": (NoSpatialByThree,
                                [check_triplet_matches_formula, check_output_is_average_of_gated_branches]),
    "no-spatial-keeps-identity-branch": (NoSpatialKeepsGate,
                                         [check_triplet_matches_formula, check_output_is_average_of_gated_branches]),
}


@pytest.mark.parametrize("mutant", list(NO_SPATIAL_MUTANTS), ids=str)
@pytest.mark.parametrize("variant", TripletAttention.VARIANTS)
def test_checks_reject_broken_no_spatial(mutant, variant):
    cls, checks = NO_SPATIAL_MUTANTS[mutant]
    broken = cls(6, kernel_size=5, variant=variant, no_spatial=True)
    for check in checks:
        with pytest.raises(AssertionError):
            check(broken)


@pytest.mark.parametrize("no_spatial", [False, True])
@pytest.mark.parametrize("variant", TripletAttention.VARIANTS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_triplet(variant, no_spatial, check):
    check(TripletAttention(6, kernel_size=5, variant=variant, no_spatial=no_spatial))


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_triplet(mutant):
    cls, breakage, variants, checks = MUTANTS[mutant]
    for variant in variants:
        broken = cls(6, kernel_size=5, variant=variant)
        breakage(broken)
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)


def test_permute_only_paper_block_has_the_same_output():
    """The chapter's claim: with rot90(+1) the flip lands on the pooled axis, so a paper block
    that only permutes computes the same output (only check_rotations can tell them apart)."""
    broken = TripletAttention(6, kernel_size=5)
    permute_only(broken)
    check_triplet_matches_formula(broken)
    check_zpool_and_maps(broken)
    check_output_is_average_of_gated_branches(broken)


def test_bad_kernel_size_is_refused():
    with pytest.raises(ValueError, match="kernel_size"):
        TripletAttention(8, kernel_size=4)


@pytest.mark.parametrize("no_spatial", [False, True])
def test_official_variant_registers_the_gates_in_the_official_order(no_spatial):
    """issue 8: a load by position (zip of two state dicts) must pair the same gates."""
    m = TripletAttention(8, variant="official", no_spatial=no_spatial)
    gates = list(dict.fromkeys(k.split(".")[0] for k in m.state_dict()))
    assert gates == (["cw", "hc"] if no_spatial else ["cw", "hc", "hw"])
    assert list(TripletAttention(8, no_spatial=no_spatial).state_dict()) == [f"{g}.conv.weight" for g in gates]


def _official(names, inner, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name in names:
        state[f"{name}.{inner}.conv.weight"] = torch.randn(1, 2, 7, 7, generator=g, dtype=torch.float64)
        state[f"{name}.{inner}.bn.weight"] = torch.randn(1, generator=g, dtype=torch.float64)
        state[f"{name}.{inner}.bn.bias"] = torch.randn(1, generator=g, dtype=torch.float64)
        state[f"{name}.{inner}.bn.running_mean"] = torch.randn(1, generator=g, dtype=torch.float64)
        state[f"{name}.{inner}.bn.running_var"] = torch.rand(1, generator=g, dtype=torch.float64) + 0.5
        state[f"{name}.{inner}.bn.num_batches_tracked"] = torch.tensor(7)
    return state


@pytest.mark.parametrize("layout", ["triplet_attention.py", "MODELS/triplet_attention.py"])
def test_both_official_layouts_load_by_name_and_by_position(layout):
    names, inner = (("cw", "hc", "hw"), "conv") if layout == "triplet_attention.py" else (
        ("ChannelGateH", "ChannelGateW", "SpatialGate"), "spatial")
    state = _official(names, inner)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    expected = official_code_forward(state, x, layout)
    by_name = TripletAttention(6, variant="official").double().eval()
    by_name.load_state_dict(convert_official_state_dict(state), strict=True)
    by_position = TripletAttention(6, variant="official").double().eval()
    by_position.load_state_dict(dict(zip(by_position.state_dict(), state.values())), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(by_name(x), expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(by_position(x), expected, rtol=1e-10, atol=1e-12)


def test_converter_keeps_the_part_before_the_block():
    key = "module.layer1.0.triplet_attention.ChannelGateW.spatial.bn.running_var"
    assert list(convert_official_state_dict({key: None})) == ["module.layer1.0.triplet_attention.hc.bn.running_var"]


def test_official_batch_of_one_value_per_batchnorm_is_refused_in_training():
    m = TripletAttention(8, variant="official").train()
    with pytest.raises(ValueError, match=r"TripletAttention.*\(1, 8, 1, 1\)"):
        m(torch.randn(1, 8, 1, 1))
    m(torch.randn(2, 8, 1, 1))                       # two values per BatchNorm: trains
    TripletAttention(8).train()(torch.randn(1, 8, 1, 1))    # the paper variant has no BatchNorm
