"""The GC chapter's derivation checks accept GCBlock (every variant, pooling and fusion) and
reject deliberately broken versions of it."""

import itertools

import pytest
import torch
from torch import nn

from attn_lib.checks.gc_block import (
    check_gc_attention_is_a_distribution,
    check_gc_identity_at_init,
    check_gc_matches_formula,
    check_gc_official_code,
    check_gc_same_for_every_position,
    official_code_forward,
)
from attn_lib.gc_block import GCBlock, convert_official_state_dict

CHECKS = [
    check_gc_matches_formula,
    check_gc_attention_is_a_distribution,
    check_gc_same_for_every_position,
    check_gc_identity_at_init,            # expects a freshly built module: the tests pass one
    check_gc_official_code,
]
SETTINGS = list(itertools.product(GCBlock.VARIANTS, GCBlock.POOLINGS, GCBlock.FUSIONS))


class SoftmaxOverChannelsGC(GCBlock):
    """Broken: the softmax runs over the (single) score channel instead of the positions."""

    def attention(self, x):
        return torch.softmax(self.w_k(x), dim=1)[:, 0]          # all ones


class SoftmaxOverWidthGC(GCBlock):
    """Broken: the softmax runs along each row (W) only, not over all H * W positions."""

    def attention(self, x):
        return torch.softmax(self.w_k(x), dim=-1)[:, 0]


class MulWhenAddGC(GCBlock):
    """Broken: fuses by a sigmoid gain although fusion="add" was asked."""

    def forward(self, x):
        return x * torch.sigmoid(self.transform(self.context(x)))


class SkipLayerNormGC(GCBlock):
    """Broken: the LayerNorm is built (its parameters exist) but skipped in the forward pass."""

    def forward(self, x):
        t = self.transform
        return x + t[3](t[2](t[0](self.context(x))))


class NotZeroInitGC(GCBlock):
    """Broken official init: the last convolution keeps PyTorch's default (random) initialisation."""

    def reset_parameters(self):
        if self.pooling == "att":
            nn.init.kaiming_normal_(self.w_k.weight, mode="fan_in", nonlinearity="relu")


class TransformFirstGC(GCBlock):
    """Broken for checkpoints: the transform registered before W_k (not the official order
    conv_mask, channel_add_conv). Same output; a load by position would pair the wrong tensors."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        w_k = self.w_k
        del self.w_k
        self.w_k = w_k


class OfficialWithoutBiasesGC(GCBlock):
    """Broken: variant="official" is accepted but builds the paper's bias-free convolutions."""

    def __init__(self, channels, *, variant="paper", **kwargs):
        super().__init__(channels, variant="paper", **kwargs)
        self.variant = variant


class PaperWithBiasesGC(GCBlock):
    """Broken: variant="paper" builds the official convolutions, biases included."""

    def __init__(self, channels, *, variant="paper", **kwargs):
        super().__init__(channels, variant="official", **kwargs)
        self.variant = variant


class ReluBeforeLayerNormGC(GCBlock):
    """Broken: ReLU before the LayerNorm (the official order is conv, LN, ReLU, conv)."""

    def forward(self, x):
        t = self.transform
        term = t[3](t[1](t[2](t[0](self.context(x)))))
        return x + term if self.fusion == "add" else x * torch.sigmoid(term)


def no_layernorm(m):
    m.transform[1] = nn.Identity()


def keep(m):
    return None


# name: (class, breakage, settings it applies to, checks that must reject it)
MUTANTS = {
    "softmax-over-channels": (SoftmaxOverChannelsGC, keep, "att",
                              [check_gc_matches_formula, check_gc_attention_is_a_distribution]),
    "softmax-over-width": (SoftmaxOverWidthGC, keep, "att",
                           [check_gc_matches_formula, check_gc_attention_is_a_distribution]),
    "layernorm-removed": (GCBlock, no_layernorm, "all", [check_gc_matches_formula]),
    "layernorm-skipped": (SkipLayerNormGC, keep, "add", [check_gc_matches_formula]),
    "mul-when-add": (MulWhenAddGC, keep, "add", [check_gc_matches_formula, check_gc_same_for_every_position]),
    "last-conv-not-zero": (NotZeroInitGC, keep, "official", [check_gc_identity_at_init]),
    "transform-registered-first": (TransformFirstGC, keep, "att", [check_gc_official_code]),
    "official-without-biases": (OfficialWithoutBiasesGC, keep, "official", [check_gc_official_code]),
    "paper-with-biases": (PaperWithBiasesGC, keep, "paper", [check_gc_official_code]),
    "relu-before-layernorm": (ReluBeforeLayerNormGC, keep, "all", [check_gc_matches_formula, check_gc_official_code]),
}


def applies(scope, variant, pooling, fusion):
    return scope == "all" or scope in (variant, pooling, fusion)


@pytest.mark.parametrize("variant,pooling,fusion", SETTINGS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_gc(variant, pooling, fusion, check):
    if check is check_gc_identity_at_init and variant == "paper":
        pytest.skip("the paper variant keeps PyTorch's initialisation: not the identity")
    check(GCBlock(12, reduction=3, pooling=pooling, fusion=fusion, variant=variant))


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_gc(mutant):
    cls, breakage, scope, checks = MUTANTS[mutant]
    tried = 0
    for variant, pooling, fusion in SETTINGS:
        if not applies(scope, variant, pooling, fusion):
            continue
        torch.manual_seed(0)
        broken = cls(12, reduction=3, pooling=pooling, fusion=fusion, variant=variant)
        breakage(broken)
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)
            tried += 1
    assert tried > 0


def test_official_init_is_identity_and_zeroes_last_conv():
    """A freshly built official block (ContextBlock.reset_parameters): last convolution zero,
    weight and bias, W_k's bias zero, output equal to the input. The paper variant keeps
    PyTorch's initialisation (issue 8: the official init only where the official code has it)."""
    block = GCBlock(64, variant="official")
    assert bool((block.transform[3].weight == 0).all()) and bool((block.transform[3].bias == 0).all())
    assert bool((block.w_k.bias == 0).all())
    x = torch.randn(2, 64, 7, 9)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
    paper = GCBlock(64)
    assert not bool((paper.transform[3].weight == 0).all())
    assert not torch.equal(paper(x), x)


def test_official_w_k_is_kaiming_normal_fan_in():
    torch.manual_seed(0)
    w = torch.cat([GCBlock(256, variant="official").w_k.weight.flatten() for _ in range(8)])
    assert abs(w.std().item() / (2 / 256) ** 0.5 - 1) < 0.1          # Kaiming: std sqrt(2 / fan_in)
    paper = torch.cat([GCBlock(256).w_k.weight.flatten() for _ in range(8)])
    assert paper.abs().max() <= 1 / 256 ** 0.5                         # PyTorch: uniform, bound 1/sqrt(fan_in)


@pytest.mark.parametrize("channels,width", [(16, 1), (32, 2)])
def test_a_degenerate_layernorm_width_warns(channels, width):
    with pytest.warns(UserWarning, match=f"GCBlock: hidden width {width}"):
        block = GCBlock(channels)
    assert block.hidden == width


def test_min_width_widens_the_bottleneck_without_a_warning(recwarn):
    block = GCBlock(16, min_width=4)
    assert block.hidden == 4 and block.transform[0].out_channels == 4
    assert GCBlock(64).hidden == 4 and GCBlock(64, min_width=8).hidden == 8
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    with pytest.raises(ValueError, match="min_width"):
        GCBlock(16, min_width=0)


def test_official_layout_loads_and_matches_the_official_forward():
    """A state dict with ContextBlock's key names, shapes and order (read from
    mmdet/ops/gcb/context_block.py @ 029db54), random values, loads and computes the official forward."""
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)
    for fusion, name in (("add", "channel_add_conv"), ("mul", "channel_mul_conv")):
        state = {"conv_mask.weight": rand(1, 24, 1, 1), "conv_mask.bias": rand(1),
                 f"{name}.0.weight": rand(6, 24, 1, 1), f"{name}.0.bias": rand(6),
                 f"{name}.1.weight": rand(6, 1, 1), f"{name}.1.bias": rand(6, 1, 1),
                 f"{name}.3.weight": rand(24, 6, 1, 1), f"{name}.3.bias": rand(24)}
        block = GCBlock(24, reduction=4, fusion=fusion, variant="official").double()
        converted = convert_official_state_dict(state)
        assert list(converted) == list(block.state_dict())
        block.load_state_dict(converted, strict=True)
        x = torch.randn(2, 24, 5, 7, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(block(x), official_code_forward(state, x, "att", fusion), rtol=1e-10, atol=1e-12)
    key = "backbone.layer2.0.context_block.channel_add_conv.3.bias"
    assert list(convert_official_state_dict({key: None})) == ["backbone.layer2.0.context_block.transform.3.bias"]


def test_torchscript_with_average_pooling():
    block = GCBlock(24, reduction=4, pooling="avg", fusion="mul").eval()
    x = torch.randn(2, 24, 5, 7)
    torch.testing.assert_close(torch.jit.script(block)(x), block(x))


def test_w_k_bias_cancels_in_the_softmax():
    block = GCBlock(12, reduction=3, variant="official").double()
    x = torch.randn(2, 12, 5, 7, dtype=torch.float64)
    with torch.no_grad():
        before = block.attention(x)
        block.w_k.bias.fill_(7.0)
        torch.testing.assert_close(block.attention(x), before, rtol=1e-12, atol=1e-14)


def test_unknown_pooling_or_fusion_is_refused():
    with pytest.raises(ValueError, match="pooling"):
        GCBlock(16, pooling="max")
    with pytest.raises(ValueError, match="fusion"):
        GCBlock(16, fusion="concat")
