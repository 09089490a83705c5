"""The DANet chapter's derivation checks accept the position and channel attention modules and
reject deliberately broken versions of them."""

import pytest
import torch

from attn_lib.checks.danet import (
    check_danet_channel_energy_sign,
    check_danet_identity_at_zero_gamma,
    check_danet_matches_formula,
    check_danet_rows_sum_to_one,
    check_danet_sdpa_matches_explicit,
    check_danet_softmax_in_float32,
)
from attn_lib.danet import ChannelAttention, PositionAttention

CHECKS = [
    check_danet_matches_formula,
    check_danet_identity_at_zero_gamma,
    check_danet_rows_sum_to_one,
    check_danet_sdpa_matches_explicit,
    check_danet_channel_energy_sign,
    check_danet_softmax_in_float32,
]

REAL = {
    **{f"position-{impl}": (PositionAttention, {"implementation": impl}) for impl in PositionAttention.IMPLEMENTATIONS},
    "position-r1": (PositionAttention, {"reduction": 1}),
    **{f"channel-{v}": (ChannelAttention, {"variant": v}) for v in ChannelAttention.VARIANTS},
}


# --- broken position attention -------------------------------------------------------------
class SoftmaxOverQueriesPAM(PositionAttention):
    """Broken: the softmax normalises over the queries i (columns) instead of the keys j."""

    def attend(self, q, k):
        energy = torch.einsum("bdi,bdj->bij", q, k)
        return torch.softmax(energy, dim=-2)


class NoResidualPAM(PositionAttention):
    """Broken: returns alpha V S^T without the input."""

    def forward(self, x):
        return super().forward(x) - x


class TransposedValuePAM(PositionAttention):
    """Broken: V S instead of V S^T (sums over the queries), in the explicit path."""

    def aggregate(self, s, v):
        return torch.einsum("bji,bcj->bci", s, v)


class ScaledSdpaPAM(PositionAttention):
    """Broken: SDPA's default 1/sqrt(d) scale left in the fused path."""

    def _sdpa(self, q, k, v):
        pad = (0, self.channels - self.qk_channels)
        q = torch.nn.functional.pad(q.transpose(1, 2), pad).unsqueeze(1)
        k = torch.nn.functional.pad(k.transpose(1, 2), pad).unsqueeze(1)
        v = v.transpose(1, 2).contiguous().unsqueeze(1)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2)


class HalfSoftmaxPAM(PositionAttention):
    """Broken: softmax on the raw energies (float16 under float16 autocast); exact in float64."""

    def attend(self, q, k):
        return torch.softmax(torch.einsum("bdi,bdj->bij", q, k), dim=-1)


# --- broken channel attention ---------------------------------------------------------------
class NoMaxTrickCAM(ChannelAttention):
    """Broken: the official variant without max(E) - E (it becomes the paper's softmax(E))."""

    def attend(self, xf):
        return torch.softmax(torch.einsum("bcn,bdn->bcd", xf, xf), dim=-1)


class SoftmaxOverRowsCAM(ChannelAttention):
    """Broken: softmax along the first channel axis (columns sum to one, rows do not)."""

    def attend(self, xf):
        energy = torch.einsum("bcn,bdn->bcd", xf, xf)
        if self.variant == "official":
            energy = energy.amax(dim=-2, keepdim=True) - energy
        return torch.softmax(energy, dim=-2)


class HalfShiftCAM(ChannelAttention):
    """Broken: the official max(E) - E formed in the energy's dtype (float16 under autocast), the
    softmax then in float32; exact in float64."""

    def attend(self, xf):
        energy = torch.einsum("bcn,bdn->bcd", xf, xf)
        shifted = energy.amax(dim=-1, keepdim=True) - energy
        return torch.softmax(shifted.to(torch.promote_types(shifted.dtype, torch.float32)), dim=-1).to(energy.dtype)


class NoResidualCAM(ChannelAttention):
    """Broken: returns beta A X without the input."""

    def forward(self, x):
        return super().forward(x) - x


MUTANTS = {
    "pam-softmax-over-queries": (SoftmaxOverQueriesPAM, {}, [check_danet_matches_formula, check_danet_rows_sum_to_one,
                                                             check_danet_sdpa_matches_explicit]),
    "pam-no-residual": (NoResidualPAM, {}, [check_danet_matches_formula, check_danet_identity_at_zero_gamma]),
    "pam-transposed-value-product": (TransposedValuePAM, {}, [check_danet_matches_formula,
                                                              check_danet_sdpa_matches_explicit]),
    "pam-sdpa-default-scale": (ScaledSdpaPAM, {"implementation": "sdpa"}, [check_danet_matches_formula,
                                                                          check_danet_sdpa_matches_explicit]),
    "cam-official-without-max-trick": (NoMaxTrickCAM, {"variant": "official"}, [check_danet_matches_formula,
                                                                                check_danet_channel_energy_sign]),
    "cam-softmax-over-rows": (SoftmaxOverRowsCAM, {}, [check_danet_matches_formula, check_danet_rows_sum_to_one,
                                                       check_danet_channel_energy_sign]),
    "cam-official-softmax-over-rows": (SoftmaxOverRowsCAM, {"variant": "official"}, [check_danet_rows_sum_to_one]),
    "cam-no-residual": (NoResidualCAM, {}, [check_danet_matches_formula, check_danet_identity_at_zero_gamma]),
    "pam-softmax-in-float16": (HalfSoftmaxPAM, {}, [check_danet_softmax_in_float32]),
    "cam-official-shift-in-float16": (HalfShiftCAM, {"variant": "official"}, [check_danet_softmax_in_float32]),
}


@pytest.mark.parametrize("mutant", ["pam-softmax-in-float16", "cam-official-shift-in-float16"])
def test_float16_mutants_pass_the_float64_checks(mutant):
    """Only the autocast check can see these two bugs: every float64 check accepts them."""
    cls, kwargs, _ = MUTANTS[mutant]
    for check in CHECKS:
        if check is not check_danet_softmax_in_float32:
            check(cls(8, **kwargs))


@pytest.mark.parametrize("case", list(REAL), ids=str)
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_danet(case, check):
    cls, kwargs = REAL[case]
    check(cls(8, **kwargs))


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_danet(mutant):
    cls, kwargs, checks = MUTANTS[mutant]
    broken = cls(8, **kwargs)
    for check in checks:
        with pytest.raises(AssertionError):
            check(broken)


def test_modules_start_as_the_identity():
    x = torch.randn(2, 8, 5, 7)
    for cls, kwargs in REAL.values():
        m = cls(8, **kwargs).eval()
        assert m.gamma.item() == 0.0
        with torch.no_grad():
            assert torch.equal(m(x), x)


def test_official_channel_attention_is_softmax_of_minus_energy():
    x = torch.randn(2, 8, 4, 6, dtype=torch.float64)
    m = ChannelAttention(8, variant="official").double()
    xf = x.flatten(2)
    torch.testing.assert_close(m.attention_map(x), torch.softmax(-(xf @ xf.transpose(1, 2)), -1))


def test_sdpa_path_works_on_odd_sizes_and_one_pixel():
    for hw in [(1, 1), (7, 9), (33, 15)]:
        m = PositionAttention(16, implementation="sdpa").double().eval()
        ref = PositionAttention(16).double().eval()
        ref.load_state_dict(m.state_dict())
        with torch.no_grad():
            m.gamma.fill_(0.7)
            ref.gamma.fill_(0.7)
            x = torch.randn(2, 16, *hw, dtype=torch.float64)
            torch.testing.assert_close(m(x), ref(x), rtol=1e-10, atol=1e-12)


def test_unknown_implementation_is_refused():
    with pytest.raises(ValueError, match="implementation"):
        PositionAttention(8, implementation="flash")
