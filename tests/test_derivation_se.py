"""The SE chapter's derivation checks accept SE and reject deliberately broken versions of it."""

import types

import pytest
import torch
from einops.layers.torch import Reduce
from torch import nn

from attn_lib.checks.se import check_se_is_a_channel_gain, check_se_matches_formula
from attn_lib.se import SE

CHECKS = [check_se_matches_formula, check_se_is_a_channel_gain]


class SpatialGainSE(SE):
    """Broken: the gain depends on the position (the input enters the product twice)."""

    def forward(self, u):
        return u * self.gate(u) * torch.sigmoid(u)


def max_squeeze(m):
    m.squeeze = Reduce("b c h w -> b c", "max").forward            # an instance attribute hides the method


def squeeze_over_width_only(m):
    """A gain per row: the mean over W only, each row excited on its own."""
    def per_row_gate(self, u):
        return self.excite(u.mean(3).transpose(1, 2)).transpose(1, 2)[..., None]

    m.gate = types.MethodType(per_row_gate, m)        # a bound method: deepcopy rebinds it


def no_sigmoid(m):
    m.excite[3] = nn.Identity()


def tanh_instead_of_relu(m):
    m.excite[1] = nn.Tanh()


def biases_in_the_wrong_variant(m):
    """The paper variant with biases, the official one without (the variants swapped)."""
    for i in (0, 2):
        fc = m.excite[i]
        m.excite[i] = nn.Linear(fc.in_features, fc.out_features, bias=fc.bias is None)


MUTANTS = {
    "max-squeeze": (SE, max_squeeze, [check_se_matches_formula]),
    "wrong-axis": (SE, squeeze_over_width_only, CHECKS),
    "no-sigmoid": (SE, no_sigmoid, [check_se_matches_formula]),
    "tanh-not-relu": (SE, tanh_instead_of_relu, [check_se_matches_formula]),
    "spatial-gain": (SpatialGainSE, lambda m: None, CHECKS),
    "paper-official-swap": (SE, biases_in_the_wrong_variant, [check_se_matches_formula]),
}


@pytest.mark.parametrize("variant", SE.VARIANTS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_se(variant, check):
    check(SE(12, reduction=3, variant=variant))


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_se(mutant):
    cls, breakage, checks = MUTANTS[mutant]
    for variant in SE.VARIANTS:
        broken = cls(12, reduction=3, variant=variant)
        breakage(broken)
        with torch.no_grad():
            broken(torch.randn(2, 12, 5, 7))          # the mutant runs: it fails the checks, not Python
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)
