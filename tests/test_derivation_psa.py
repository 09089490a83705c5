"""The PSA chapter's derivation checks accept both layouts in both variants and reject
deliberately broken versions of them."""

import pytest
import torch
from torch import nn

from attn_lib.checks.psa import (
    check_psa_attention_shapes,
    check_psa_branches_match_formula,
    check_psa_composition,
    check_psa_internal_width,
    check_psa_matches_formula,
    check_psa_matches_official_code,
    check_psa_softmax_axes,
    official_layout,
)
from attn_lib.psa import (
    PSAChannel,
    PSAParallel,
    PSASequential,
    PSASpatial,
    _OFFICIAL_PREFIXES,
    _rename_official,
    _softmax,
    convert_official_state_dict,
)

CHECKS = [
    check_psa_branches_match_formula,
    check_psa_matches_formula,
    check_psa_composition,
    check_psa_attention_shapes,
    check_psa_softmax_axes,
    check_psa_internal_width,
]
CASES = [(cls, v) for cls in (PSAParallel, PSASequential) for v in cls.VARIANTS]
C = 32          # the official PSA_s bottleneck is (C // 2) // 4 = 4 wide: its LayerNorm is not degenerate


# ---------------------------------------------------------------- broken blocks
class BothGatesFromX(PSASequential):
    """Broken port: the 'sequential' block computes both gates from x and multiplies them."""

    def forward(self, x):
        return self.channel_only.gate(x) * self.spatial_only.gate(x) * x


class SpatialFirst(PSASequential):
    """Broken: the sequential layout in the wrong order, channel(spatial(x))."""

    def forward(self, x):
        return self.channel_only(self.spatial_only(x))


class ChannelSoftmaxOverWidth(PSAChannel):
    """Broken: the channel branch's softmax over W only (each row of the map sums to one)."""

    def weights(self, x):
        return _softmax(self.w_q(x), 3)


class SpatialSoftmaxOverBatch(PSASpatial):
    """Broken: the paper's spatial softmax over the batch instead of the C/2 channels."""

    def weights(self, x):
        return _softmax(self.query(x), 0)


class ChannelWeightsInWrittenOrderWithoutWv(PSAChannel):
    """Broken change of order: averages the input with the softmax weights but forgets W_v
    (takes the first C/2 input channels instead)."""

    def gate(self, x):
        p = self.weights(x).flatten(2)                                      # (B, 1, HW)
        z = torch.einsum("bcn,bon->bc", x.flatten(2), p)[:, : self.w_v.weight.shape[0]]
        return torch.sigmoid(self.w_z(z[:, :, None, None]))


class AffineOnly(nn.LayerNorm):
    """Broken LayerNorm: same parameters, but it only scales and shifts (no normalisation)."""

    def forward(self, x):
        return x * self.weight + self.bias


class SpatialRegisteredFirst(PSAParallel):
    """Broken official layout: the spatial branch registered before the channel branch, so the
    state dict is not in the official order (a load by position would pair the wrong tensors)."""

    def __init__(self, channels, **kwargs):
        super().__init__(channels, **kwargs)
        self._modules["channel_only"] = self._modules.pop("channel_only")     # now after spatial_only


def as_class(attr, cls):
    def breakage(m):
        getattr(m, attr).__class__ = cls
    return breakage


def remove_layernorm(m):
    m.channel_only.w_z[1] = nn.Identity()


def inert_layernorm(m):
    old = m.channel_only.w_z[1]
    new = AffineOnly(old.normalized_shape)
    new.load_state_dict(old.state_dict())
    m.channel_only.w_z[1] = new


def swap_branch_attributes(m):
    m.channel_only, m.spatial_only = m.spatial_only, m.channel_only


def flip_spatial_softmax(m):
    """Official-versus-paper swap: the paper's block with the official PSA_p softmax, and back."""
    m.spatial_only.form = "official_p" if m.variant == "paper" else "paper"


def bottleneck_without_relu(m):
    """The official PSA_s bottleneck W_z without its ReLU (only the official variant has one)."""
    m.channel_only.w_z[2] = nn.Identity()


def quarter_width(m):
    """An SE-style bottleneck: the channel branch keeps C/4 instead of C/2 channels."""
    m.channel_only.w_v = nn.Conv2d(C, C // 4, 1, bias=False)
    m.channel_only.w_z[0] = nn.Conv2d(C // 4, C, 1, bias=False)


FORMULA = [check_psa_branches_match_formula, check_psa_matches_formula]
BOTH = ("paper", "official")
MUTANTS = {
    # name: (class, breakage, variants, checks that must reject it)
    "sequential-both-from-x": (BothGatesFromX, None, BOTH, [check_psa_matches_formula, check_psa_composition]),
    "sequential-wrong-order": (SpatialFirst, None, BOTH, [check_psa_matches_formula, check_psa_composition]),
    "channel-softmax-wrong-axis": (PSAParallel, as_class("channel_only", ChannelSoftmaxOverWidth), BOTH,
                                   FORMULA + [check_psa_softmax_axes]),
    "channel-softmax-wrong-axis-seq": (PSASequential, as_class("channel_only", ChannelSoftmaxOverWidth), BOTH,
                                       FORMULA + [check_psa_softmax_axes]),
    "spatial-softmax-wrong-axis": (PSAParallel, as_class("spatial_only", SpatialSoftmaxOverBatch), ("paper",),
                                   FORMULA + [check_psa_softmax_axes]),
    "reordered-without-w_v": (PSAParallel, as_class("channel_only", ChannelWeightsInWrittenOrderWithoutWv), BOTH,
                              FORMULA),
    "layernorm-missing": (PSAParallel, remove_layernorm, ("paper",), FORMULA + [check_psa_internal_width]),
    "layernorm-missing-seq": (PSASequential, remove_layernorm, BOTH, FORMULA + [check_psa_internal_width]),
    "layernorm-inert": (PSAParallel, inert_layernorm, ("paper",), FORMULA),
    "layernorm-inert-seq": (PSASequential, inert_layernorm, BOTH, FORMULA),
    # (the official PSA_p's two softmaxes are both over H*W: the softmax check cannot tell them apart)
    "branches-swapped": (PSAParallel, swap_branch_attributes, BOTH,
                         FORMULA + [check_psa_attention_shapes, check_psa_internal_width]),
    "branches-swapped-seq": (PSASequential, swap_branch_attributes, BOTH,
                             FORMULA + [check_psa_attention_shapes, check_psa_softmax_axes, check_psa_internal_width]),
    "official-paper-softmax-swap": (PSAParallel, flip_spatial_softmax, BOTH, FORMULA + [check_psa_softmax_axes]),
    "quarter-width": (PSAParallel, quarter_width, ("paper",), FORMULA + [check_psa_internal_width]),
    "official-bottleneck-without-relu": (PSASequential, bottleneck_without_relu, ("official",),
                                         FORMULA + [check_psa_matches_official_code]),
    "official-registered-out-of-order": (SpatialRegisteredFirst, None, ("official",), [check_psa_matches_official_code]),
    "official-softmax-of-the-paper": (PSASequential, flip_spatial_softmax, ("official",), [check_psa_matches_official_code]),
}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0].__name__}-{c[1]}")
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_psa(case, check):
    cls, variant = case
    check(cls(C, variant=variant))


@pytest.mark.parametrize("cls", [PSAParallel, PSASequential], ids=lambda c: c.__name__)
def test_official_check_accepts_the_official_variant(cls):
    check_psa_matches_official_code(cls(C, variant="official"))


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_psa(mutant):
    cls, breakage, variants, checks = MUTANTS[mutant]
    for variant in variants:
        broken = cls(C, variant=variant)
        if breakage is not None:
            breakage(broken)
        with torch.no_grad():
            broken(torch.randn(2, C, 5, 7))                     # the mutant runs: it is wrong, not broken
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)


def swapped_values(state_dict):
    """A converter that swaps the two branches' value projections (both (C/2, C, 1, 1))."""
    swapped = tuple((o, {"channel_only.w_v.": "spatial_only.w_v.", "spatial_only.w_v.": "channel_only.w_v."}.get(u, u))
                    for o, u in _OFFICIAL_PREFIXES)
    return _rename_official(state_dict, swapped)


@pytest.mark.parametrize("cls", [PSAParallel, PSASequential], ids=lambda c: c.__name__)
def test_official_check_rejects_a_converter_that_swaps_the_branches(cls):
    with pytest.raises(AssertionError):
        check_psa_matches_official_code(cls(C, variant="official"), convert=swapped_values)


def test_sequential_is_exactly_spatial_after_channel():
    torch.manual_seed(0)
    for variant in PSASequential.VARIANTS:
        m = PSASequential(C, variant=variant).eval()
        x = torch.randn(2, C, 7, 9)
        with torch.no_grad():
            assert torch.equal(m(x), m.spatial_only(m.channel_only(x)))


@pytest.mark.parametrize("cls", [PSAParallel, PSASequential], ids=lambda c: c.__name__)
def test_converter_maps_each_official_tensor_to_its_branch(cls):
    """The official `spatial_pool` (conv_q_right, conv_v_right, conv_up) is our channel_only, its
    `channel_pool` (conv_q_left, conv_v_left) our spatial_only; the order is the official one."""
    m = cls(C, variant="official")
    converted = convert_official_state_dict(dict.fromkeys(official_layout(C, cls.layout)))
    assert list(converted) == list(m.state_dict())
    for official, ours in zip(official_layout(C, cls.layout), converted):
        branch = "channel_only." if "right" in official or official.startswith("conv_up") else "spatial_only."
        assert ours.startswith(branch), (official, ours)


def test_official_initialisation_is_kaiming_fan_in():
    """The official reset_parameters: kaiming_normal_(mode='fan_in', nonlinearity='relu') on the four
    projections, std sqrt(2 / C); the paper variant keeps PyTorch's default, std 1 / sqrt(3 C)."""
    torch.manual_seed(0)
    channels = 256
    for cls in (PSAParallel, PSASequential):
        for variant, std in (("official", (2 / channels) ** 0.5), ("paper", (1 / (3 * channels)) ** 0.5)):
            m = cls(channels, variant=variant)
            for conv in (m.channel_only.w_v, m.spatial_only.w_q, m.spatial_only.w_v):
                assert abs(conv.weight.std().item() / std - 1) < 0.05, (cls.__name__, variant, conv.weight.std())
            if variant == "official":                 # normal, not uniform: some entries beyond 2.5 std
                assert (m.channel_only.w_v.weight.abs() > 2.5 * std).any()


def test_degenerate_official_bottleneck_warns():
    with pytest.warns(UserWarning, match="PSASequential.*2 wide"):
        PSASequential(16, variant="official")
    with pytest.warns(UserWarning, match="PSASequential.*1 wide"):
        PSASequential(8, variant="official")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PSASequential(24, variant="official")                  # width 3: no warning
        PSASequential(16, variant="official", min_width=4)
        PSASequential(8)                                       # the paper's form has no bottleneck
        PSAParallel(3)                                         # its LayerNorm over C = 3 values
    for cls in (PSAParallel, PSASequential):
        with pytest.warns(UserWarning, match=f"{cls.__name__}.*LayerNorm.*C=2"):
            cls(2)
    assert PSASequential(16, variant="official", min_width=4).channel_only.hidden == 4
