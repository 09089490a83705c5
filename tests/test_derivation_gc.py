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
)
from attn_lib.gc_block import GCBlock

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
    """Broken: the last convolution keeps PyTorch's default (random) initialisation."""

    def reset_parameters(self):
        if self.pooling == "att":
            nn.init.kaiming_normal_(self.w_k.weight, mode="fan_in", nonlinearity="relu")


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
    "last-conv-not-zero": (NotZeroInitGC, keep, "all", [check_gc_identity_at_init]),
    "official-without-biases": (OfficialWithoutBiasesGC, keep, "official", [check_gc_official_code]),
    "paper-with-biases": (PaperWithBiasesGC, keep, "paper", [check_gc_official_code]),
    "relu-before-layernorm": (ReluBeforeLayerNormGC, keep, "all", [check_gc_matches_formula, check_gc_official_code]),
}


def applies(scope, variant, pooling, fusion):
    return scope == "all" or scope in (variant, pooling, fusion)


@pytest.mark.parametrize("variant,pooling,fusion", SETTINGS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_gc(variant, pooling, fusion, check):
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


def test_default_init_is_identity_and_zeroes_last_conv():
    """A freshly built default block: last convolution zero, output equal to the input."""
    for variant in GCBlock.VARIANTS:
        block = GCBlock(32, variant=variant)
        assert bool((block.transform[3].weight == 0).all())
        assert block.transform[3].bias is None or bool((block.transform[3].bias == 0).all())
        x = torch.randn(2, 32, 7, 9)
        torch.testing.assert_close(block(x), x, rtol=0, atol=0)


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
