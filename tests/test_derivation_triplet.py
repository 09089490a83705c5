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
    check_zpool_and_maps,
)
from attn_lib.triplet import AttentionGate, Rotate90, TripletAttention

CHECKS = [check_triplet_matches_formula, check_rotations, check_zpool_and_maps,
          check_output_is_average_of_gated_branches]


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
        return self.turn(y.flip(self.flip_dim) if self.flip else y)


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
    "swapped-branch-gates": (SwappedGates, lambda m: None, ALL, [check_triplet_matches_formula]),
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
