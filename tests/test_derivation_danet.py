"""The DANet chapter's derivation checks accept the position and channel attention modules and
reject deliberately broken versions of them."""

import copy
import warnings

import pytest
import torch

import attn_lib
from attn_lib.checks.danet import (
    check_danet_channel_energy_sign,
    check_danet_half_precision,
    check_danet_head_matches_formula,
    check_danet_identity_at_zero_gamma,
    check_danet_matches_formula,
    check_danet_rows_sum_to_one,
    check_danet_sdpa_matches_explicit,
    check_danet_softmax_in_float32,
    check_danet_sum_matches_formula,
)
from attn_lib.danet import ChannelAttention, DANetHead, DualAttention, PositionAttention

CHECKS = [
    check_danet_matches_formula,
    check_danet_identity_at_zero_gamma,
    check_danet_rows_sum_to_one,
    check_danet_sdpa_matches_explicit,
    check_danet_channel_energy_sign,
    check_danet_softmax_in_float32,
    check_danet_half_precision,
]

REAL = {
    **{f"position-{v}-{impl}": (PositionAttention, {"implementation": impl, "variant": v})
       for v in PositionAttention.VARIANTS for impl in PositionAttention.IMPLEMENTATIONS},
    "position-r2": (PositionAttention, {"reduction": 2}),
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


class NoFloat32PAM(PositionAttention):
    """Broken: the attention computed in the input's dtype (float16 under float16 autocast or
    for a float16 module), with no float32 path; exact in float64."""

    def forward(self, x):
        return x + self.gamma * self.context(x).reshape(x.shape)


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


class HalfEnergyCAM(ChannelAttention):
    """Broken: the energy (and the official max(E) - E) formed in the input's dtype, only the
    softmax in float32, as the module did before: float16 energies overflow on a 96 x 96 map;
    exact in float64."""

    def attend(self, xf):
        energy = torch.einsum("bcn,bdn->bcd", xf, xf)
        if self.variant == "official":
            energy = energy.amax(dim=-1, keepdim=True) - energy
        return torch.softmax(energy.to(torch.promote_types(energy.dtype, torch.float32)), dim=-1).to(energy.dtype)

    def forward(self, x):
        return x + self.gamma * self.context(x).reshape(x.shape)


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
    "pam-attention-in-float16": (NoFloat32PAM, {}, [check_danet_softmax_in_float32, check_danet_half_precision]),
    # at C = 8 the official C' = 1: a one-term energy is rounded once, and the float16 check passes
    "pam-official-attention-in-float16": (NoFloat32PAM, {"variant": "official"}, [check_danet_softmax_in_float32]),
    "cam-energy-in-float16": (HalfEnergyCAM, {}, [check_danet_softmax_in_float32, check_danet_half_precision]),
    "cam-official-energy-in-float16": (HalfEnergyCAM, {"variant": "official"},
                                       [check_danet_softmax_in_float32, check_danet_half_precision]),
}

HALF_MUTANTS = ["pam-attention-in-float16", "pam-official-attention-in-float16", "cam-energy-in-float16",
                "cam-official-energy-in-float16"]


@pytest.mark.parametrize("mutant", HALF_MUTANTS)
def test_float16_mutants_pass_the_float64_checks(mutant):
    """Only the autocast check can see these two bugs: every float64 check accepts them."""
    cls, kwargs, _ = MUTANTS[mutant]
    for check in CHECKS:
        if check not in (check_danet_softmax_in_float32, check_danet_half_precision):
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
        ref = PositionAttention(16, implementation="explicit").double().eval()
        ref.load_state_dict(m.state_dict())
        with torch.no_grad():
            m.gamma.fill_(0.7)
            ref.gamma.fill_(0.7)
            x = torch.randn(2, 16, *hw, dtype=torch.float64)
            torch.testing.assert_close(m(x), ref(x), rtol=1e-10, atol=1e-12)


def test_unknown_implementation_is_refused():
    with pytest.raises(ValueError, match="implementation"):
        PositionAttention(8, implementation="flash")


def test_position_widths_follow_the_variant():
    """Issue 8: the paper's query/key width is C' = C; reduction=8 (C // 8) is the official code's."""
    assert PositionAttention(64).qk_channels == 64
    assert PositionAttention(64, variant="official").qk_channels == 8
    assert tuple(PositionAttention(64, variant="official").query.weight.shape) == (8, 64, 1, 1)
    assert PositionAttention(64, reduction=4).qk_channels == 16
    assert PositionAttention(4, variant="official").qk_channels == 1          # the official 4 // 8 = 0, clamped
    assert PositionAttention(4, variant="official", min_width=8).qk_channels == 8
    with pytest.raises(ValueError, match="min_width"):
        PositionAttention(8, min_width=0)


@pytest.mark.parametrize("variant", PositionAttention.VARIANTS)
def test_wider_query_than_value_works_in_both_implementations(variant):
    """min_width above C: the fused path pads V instead of Q and K."""
    m = PositionAttention(4, variant=variant, min_width=8, implementation="sdpa").double().eval()
    ref = PositionAttention(4, variant=variant, min_width=8, implementation="explicit").double().eval()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        m.gamma.fill_(0.5)
        ref.gamma.fill_(0.5)
        torch.testing.assert_close(m(x), ref(x), rtol=1e-10, atol=1e-12)


def test_auto_takes_the_fused_kernel_above_2048_positions():
    m = PositionAttention(8)
    assert not m.uses_sdpa(torch.empty(1, 8, 45, 45))                      # N = 2025
    assert m.uses_sdpa(torch.empty(1, 8, 46, 46))                          # N = 2116
    assert not PositionAttention(8, implementation="explicit").uses_sdpa(torch.empty(1, 8, 64, 64))
    assert PositionAttention(8, implementation="sdpa").uses_sdpa(torch.empty(1, 8, 2, 2))


@pytest.mark.parametrize("variant", ChannelAttention.VARIANTS)
def test_channel_attention_in_float16_on_a_96x96_map_is_finite(variant):
    """Issue 8: the channel energy in float16 gave NaN at 96 x 96 (std 3 activations)."""
    torch.manual_seed(0)
    m = ChannelAttention(8, variant=variant)
    with torch.no_grad():
        m.gamma.fill_(0.5)
    x = (torch.randn(1, 8, 96, 96) * 3).half()
    with torch.no_grad():
        y = copy.deepcopy(m).half()(x)
        reference = m(x.float())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), reference, rtol=0, atol=1e-2 * reference.abs().max().item())
    broken = HalfEnergyCAM(8, variant=variant).half()                      # what the module did before
    broken.load_state_dict(copy.deepcopy(m).half().state_dict())
    with torch.no_grad():
        assert torch.isnan(broken(x)).any()


@pytest.mark.parametrize("cls", [PositionAttention, ChannelAttention])
def test_integer_input_is_refused(cls):
    """Issue 8: danet_channel silently accepted an int64 tensor."""
    with pytest.raises(TypeError, match=cls.__name__):
        cls(8)(torch.randint(0, 5, (2, 8, 4, 4)))


def test_dual_attention_sums_both_branches_and_scripts():
    m = DualAttention(8, variant="official").double().eval()
    with torch.no_grad():
        m.position.gamma.fill_(0.5)
        m.channel.gamma.fill_(0.5)
        x = torch.randn(2, 8, 5, 7, dtype=torch.float64)
        torch.testing.assert_close(m(x), m.position(x) + m.channel(x), rtol=0, atol=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                                # TorchScript's deprecation notice
            scripted = torch.jit.script(m)
        torch.testing.assert_close(scripted(x), m(x), rtol=1e-12, atol=1e-12)


def test_a_danet_head_checkpoint_loads_by_prefix():
    """The chapter's one-line load: the official network keeps the modules under head.sa / head.sc."""
    g = torch.Generator().manual_seed(0)
    shapes = {"head.conv5a.0.weight": (4, 16, 3, 3), "head.sa.gamma": (1,),
              "head.sa.query_conv.weight": (2, 16, 1, 1), "head.sa.query_conv.bias": (2,),
              "head.sa.key_conv.weight": (2, 16, 1, 1), "head.sa.key_conv.bias": (2,),
              "head.sa.value_conv.weight": (16, 16, 1, 1), "head.sa.value_conv.bias": (16,), "head.sc.gamma": (1,)}
    sd = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    pam = attn_lib.load_official("danet_position", {k[8:]: v for k, v in sd.items() if k.startswith("head.sa.")}, 16)
    cam = attn_lib.load_official("danet_channel", {k[8:]: v for k, v in sd.items() if k.startswith("head.sc.")}, 16)
    assert torch.equal(pam.query.weight, sd["head.sa.query_conv.weight"]) and torch.equal(cam.gamma, sd["head.sc.gamma"])
    with pytest.raises(ValueError, match="query_conv.weight"):
        attn_lib.load_official("danet_position", {"gamma": sd["head.sa.gamma"]}, 16)


@pytest.mark.parametrize("variant", PositionAttention.VARIANTS)
def test_the_sdpa_path_runs_a_fused_kernel(variant):
    """The memory-efficient path must not fall back to PyTorch's math kernel (which builds the
    N x N matrix): with only the fused CPU kernel allowed, forward and backward still run. (The
    paper variant's unpadded Q and K were not contiguous and fell back before.)"""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    m = PositionAttention(16, variant=variant, implementation="sdpa")
    x = torch.randn(2, 16, 9, 7, requires_grad=True)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        m(x).sum().backward()
    assert x.grad is not None


# --- the sum ("danet") and the official head ("danet_head") ---------------------------------
class SharedResidualDual(DualAttention):
    """Broken: one residual for both branches, X + alpha V S^T + beta A X (X, not 2X, at
    initialisation): a plausible "fix" of the 2X that is not the paper's sum."""

    def forward(self, x):
        return self.position(x) + self.channel(x) - x


class SwappedBranchesHead(DANetHead):
    """Broken: conv5a feeds the channel module and conv5c the position module."""

    def branches(self, x):
        return self.conv51(self.sa(self.conv5c(x))), self.conv52(self.sc(self.conv5a(x)))


class SumBeforeConvsHead(DANetHead):
    """Broken: the two attention outputs summed before conv51 (conv52 unused)."""

    def forward(self, x):
        return self.conv8(self.conv51(self.sa(self.conv5a(x)) + self.sc(self.conv5c(x))))


@pytest.mark.parametrize("variant", DualAttention.VARIANTS)
def test_sum_check_accepts_dual_attention_and_head_check_accepts_the_head(variant):
    check_danet_sum_matches_formula(DualAttention(8, variant=variant))
    for aux in (False, True):
        check_danet_head_matches_formula(DANetHead(16, 3, variant=variant, aux=aux))


@pytest.mark.parametrize("variant", DualAttention.VARIANTS)
def test_sum_and_head_checks_reject_broken_modules(variant):
    with pytest.raises(AssertionError):
        check_danet_sum_matches_formula(SharedResidualDual(8, variant=variant))
    for cls in (SwappedBranchesHead, SumBeforeConvsHead):
        with pytest.raises(AssertionError):
            check_danet_head_matches_formula(cls(16, 3, variant=variant))


def test_dual_attention_returns_twice_the_input_at_initialisation():
    x = torch.randn(2, 8, 5, 7)
    for variant in DualAttention.VARIANTS:
        with torch.no_grad():
            assert torch.equal(DualAttention(8, variant=variant)(x), 2 * x)


def test_head_widths_and_auxiliary_outputs():
    head = DANetHead(32, 5, aux=True, variant="official").eval()
    assert (head.inter_channels, head.out_channels, head.sa.qk_channels) == (8, 5, 1)
    x = torch.randn(2, 32, 6, 7)
    with torch.no_grad():
        fused, aux_pos, aux_chn = head.forward_with_aux(x)
        torch.testing.assert_close(fused, head(x), rtol=0, atol=0)
    assert aux_pos.shape == aux_chn.shape == (2, 5, 6, 7)
    assert DANetHead(16).out_channels == 16 and not hasattr(DANetHead(16), "conv6")
    with pytest.raises(RuntimeError, match="aux=True"):
        DANetHead(16).forward_with_aux(torch.randn(1, 16, 3, 3))


def test_head_auxiliary_outputs_equal_the_official_ones():
    """The fixture recorded from the official DANetHead also holds its three outputs in eval."""
    from pathlib import Path

    path = Path(__file__).parent / "fixtures" / "official" / "danet_head.pt"
    data = torch.load(path, weights_only=True)
    head = attn_lib.load_official("danet_head", data["state_dict"], data["channels"], **data["kwargs"])
    with torch.no_grad():
        outputs = head.double().eval().forward_with_aux(data["input"])
    for ours, official in zip(outputs, data["eval_aux"]):
        torch.testing.assert_close(ours, official, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"out_channels": 5.0}, ValueError, "out_channels must be an int"),
    ({"out_channels": True}, ValueError, "out_channels must be an int"),
    ({"inter_channels": 0}, ValueError, "inter_channels must be an int"),
    ({"dropout": 1.5}, ValueError, r"dropout must be a probability in \[0, 1\]"),
    ({"dropout": "a"}, ValueError, "dropout must be a probability"),
    ({"aux": "no"}, TypeError, "aux must be True or False"),
])
def test_head_refuses_bad_arguments_by_name(kwargs, error, match):
    with pytest.raises(error, match="DANetHead: " + match):
        DANetHead(16, **kwargs)
