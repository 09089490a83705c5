"""The SimAM chapter's derivation checks accept SimAM and reject deliberately broken versions of it;
the closed-form minimal energy equals a numerical minimisation of the paper's equation (2)."""

import pytest
import torch
from torch import nn

from attn_lib.checks.simam import (
    check_simam_gate_is_minimal_energy,
    check_simam_gate_range,
    check_simam_has_no_parameters,
    check_simam_matches_formula,
    closed_form_energy,
    minimise_energy,
)
import attn_lib
from attn_lib.simam import SimAM

CHECKS = [
    check_simam_matches_formula,
    check_simam_gate_is_minimal_energy,
    check_simam_has_no_parameters,
    check_simam_gate_range,
]
VALUE_CHECKS = [check_simam_matches_formula, check_simam_gate_is_minimal_energy]


class OffByOneSimAM(SimAM):
    """Broken: the paper variant divides by M - 1 and the official one by M (variants swapped)."""

    def variance_divisor(self, m):
        return m - 1 if self.variant == "paper" else m


class NoHalfSimAM(SimAM):
    """Broken: 1/e* without its + 1/2."""

    def inverse_energy(self, x):
        return super().inverse_energy(x) - 0.5


class LearnableLambdaSimAM(SimAM):
    """Broken: lambda as a learnable parameter (the module is no longer parameter-free)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.e_lambda = nn.Parameter(torch.tensor(self.e_lambda))


class StatisticsOverChannelsSimAM(SimAM):
    """Broken: mean and variance over the channels at each position instead of over the map."""

    def inverse_energy(self, x):
        n = self.variance_divisor(x.shape[2] * x.shape[3])
        d = (x - x.mean(1, keepdim=True)).square()
        return d / (4 * (d.sum(1, keepdim=True) / n + self.e_lambda)) + 0.5


class MeanOverWidthOnlySimAM(SimAM):
    """Broken: the mean over each row instead of over the whole map."""

    def inverse_energy(self, x):
        n = self.variance_divisor(x.shape[2] * x.shape[3])
        d = (x - x.mean(3, keepdim=True)).square()
        return d / (4 * (d.sum((2, 3), keepdim=True) / n + self.e_lambda)) + 0.5


class NoSigmoidSimAM(SimAM):
    """Broken: the importance 1/E itself as the gate."""

    def forward(self, x):
        return x * self.inverse_energy(x)


MUTANTS = {
    "variance-over-channels": (StatisticsOverChannelsSimAM, VALUE_CHECKS),
    "mean-over-width-only": (MeanOverWidthOnlySimAM, VALUE_CHECKS),
    "divisor-off-by-one": (OffByOneSimAM, VALUE_CHECKS),
    "no-plus-half": (NoHalfSimAM, VALUE_CHECKS + [check_simam_gate_range]),
    "no-sigmoid": (NoSigmoidSimAM, VALUE_CHECKS + [check_simam_gate_range]),
    "learnable-lambda": (LearnableLambdaSimAM, [check_simam_has_no_parameters]),
}


@pytest.mark.parametrize("variant", SimAM.VARIANTS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_simam(variant, check):
    check(SimAM(6, variant=variant))
    check(SimAM(6, e_lambda=0.05, variant=variant))


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_simam(mutant):
    cls, checks = MUTANTS[mutant]
    for variant in SimAM.VARIANTS:
        broken = cls(6, variant=variant)
        broken(torch.randn(2, 6, 5, 7))                      # the mutant runs
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)


@pytest.mark.parametrize("lam", [1e-4, 0.3])
def test_closed_form_energy_is_the_minimum_of_equation_2(lam):
    """e_t^* with the mean and variance of the M - 1 others equals the numerical minimum over
    (w_t, b_t) of the literal energy, for every neuron of a small channel."""
    g = torch.Generator().manual_seed(0)
    channel = torch.randn(12, generator=g, dtype=torch.float64) * 0.7 + 0.2
    for k in range(channel.numel()):
        t, others = channel[k], torch.cat([channel[:k], channel[k + 1 :]])
        w, b, e_numeric = minimise_energy(t, others, lam)
        mu_t, var_t = others.mean(), others.var(unbiased=False)
        torch.testing.assert_close(e_numeric, closed_form_energy(t, mu_t, var_t, lam), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(b, -(t + mu_t) * w / 2, rtol=1e-10, atol=1e-12)


def test_official_variant_refuses_a_one_by_one_map():
    x = torch.randn(2, 4, 1, 1)
    with pytest.raises(ValueError, match=r"SimAM.*\(2, 4, 1, 1\)"):
        SimAM(4, variant="official")(x)
    torch.testing.assert_close(SimAM(4)(x), x * torch.sigmoid(torch.tensor(0.5)))


def test_official_variant_is_the_official_code():
    """The official forward (github.com/ZjjConan/SimAM), transcribed."""
    x = torch.randn(2, 5, 6, 3, dtype=torch.float64)
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
    expected = x * torch.sigmoid(d / (4 * (d.sum(dim=[2, 3], keepdim=True) / n + 1e-4)) + 0.5)
    torch.testing.assert_close(SimAM(5, variant="official")(x), expected, rtol=1e-12, atol=1e-14)


def test_e_lambda_must_be_positive():
    with pytest.raises(ValueError, match="e_lambda"):
        SimAM(4, e_lambda=0.0)


@pytest.mark.parametrize("variant", SimAM.VARIANTS)
def test_float16_on_a_large_map_tracks_float32(variant):
    """In float16 the variance sum of a 56 x 56 map with activations of std 10
    overflows (sum of 3136 squares of about 100 > 65504); computed in float16 every gate became
    sigmoid(1/2), one constant, with no NaN. The module computes half inputs in float32."""
    x = (10 * torch.randn(2, 8, 56, 56)).half()
    m = SimAM(8, variant=variant)
    with torch.no_grad():
        low, reference = m(x), m(x.float())
    assert low.dtype == torch.float16 and torch.isfinite(low).all()
    gates = (low.float() / x.float())[x.abs() > 1]              # y / x, away from float16's rounding of small x
    spread = (gates.max() - gates.min()).item()
    assert spread > 0.2, f"every gate within {spread:.3g} of one value: the attention collapsed to a constant"
    scale = reference.abs().max()
    assert (low.float() - reference).abs().max() <= 2e-3 * scale
    with torch.no_grad():
        low_bf16 = m(x.float().bfloat16())
    assert low_bf16.dtype == torch.bfloat16
    assert (low_bf16.float() - m(x.float().bfloat16().float())).abs().max() <= 1e-2 * scale


def test_load_official_takes_the_empty_official_state_dict():
    """simam_module has no tensors: its state dict is empty, and load_official still builds the
    official variant (with the official models' lambda when asked); anything else is refused."""
    m = attn_lib.load_official("simam", {}, 16)
    assert isinstance(m, SimAM) and m.variant == "official" and m.e_lambda == 1e-4
    assert attn_lib.load_official("simam", {}, 16, e_lambda=0.1).e_lambda == 0.1
    with pytest.raises(ValueError, match="not_a_layer.weight"):
        attn_lib.load_official("simam", {"not_a_layer.weight": torch.zeros(1)}, 16)
