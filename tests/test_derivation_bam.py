"""The BAM chapter's derivation checks accept BAM (both variants) and reject deliberately broken
versions of it."""

import pytest
import torch
from einops.layers.torch import Reduce
from torch import nn

from attn_lib.bam import BAM
from attn_lib.checks.bam import (
    CHECKS,
    check_bam_branch_shapes,
    check_bam_combination,
    check_bam_is_a_residual_gain,
    check_bam_matches_formula,
)


class SwappedCombination(BAM):
    """Broken: the paper variant multiplies the maps, the official variant adds them."""

    def combine(self, m_c, m_s):
        return m_c + m_s if self.variant == "official" else m_c * m_s


class NoResidual(BAM):
    """Broken: F' = F * M(F), the residual F + ... forgotten."""

    def forward(self, f):
        return f * self.attention(f)


class NoSigmoid(BAM):
    """Broken: the logits are used as the gain, unsquashed."""

    def attention(self, f):
        return self.combine(self.channel_logits(f), self.spatial_logits(f))


def _replace_dilated_convs(m, padding, dilation):
    for name in ("f1", "f2"):
        old = getattr(m.spatial_gate, name)
        new = nn.Conv2d(old.in_channels, old.out_channels, 3, padding=padding, dilation=dilation)
        new.load_state_dict(old.state_dict())
        setattr(m.spatial_gate, name, new)


def padding_one_less(m):
    """padding = d - 1: each dilated conv shrinks the map by 2 (runs, wrong size)."""
    _replace_dilated_convs(m, padding=m.dilation - 1, dilation=m.dilation)


def padding_one(m):
    """padding = 1 copied from an ordinary 3x3 conv: shrinks by 2(d - 1) per conv."""
    _replace_dilated_convs(m, padding=1, dilation=m.dilation)


def no_dilation(m):
    """The dilation forgotten (padding 1, dilation 1): the size is kept, the taps are wrong."""
    _replace_dilated_convs(m, padding=1, dilation=1)


def max_pooling(m):
    m.channel_gate.pool = Reduce("b c h w -> b c", "max")


def final_bn_forgotten(m):
    """The paper's BN at the end of the spatial branch left out (official: the BN after f_2)."""
    if m.variant == "official":
        m.spatial_gate.bn2 = nn.Identity()
    else:
        m.spatial_gate.bn = nn.Identity()


def bn_ignores_running_stats(m):
    """The channel branch's BN built with track_running_stats=False: batch statistics in eval too."""
    name = "bn0" if m.variant == "official" else "bn"
    old = getattr(m.channel_gate, name)
    setattr(m.channel_gate, name, nn.BatchNorm1d(old.num_features, track_running_stats=False))


def relu_after_f2_forgotten(m):
    m.spatial_gate.relu2 = nn.Identity()


MUTANTS = {
    "product-sum-swapped": (SwappedCombination, None, [check_bam_matches_formula, check_bam_combination]),
    "no-residual": (NoResidual, None, [check_bam_matches_formula, check_bam_is_a_residual_gain]),
    "no-sigmoid": (NoSigmoid, None, [check_bam_matches_formula, check_bam_is_a_residual_gain, check_bam_combination]),
    "padding-d-minus-1": (BAM, padding_one_less, [check_bam_branch_shapes]),
    "padding-1": (BAM, padding_one, [check_bam_branch_shapes]),
    "no-dilation": (BAM, no_dilation, [check_bam_matches_formula]),
    "max-pooling": (BAM, max_pooling, [check_bam_matches_formula]),
    "final-bn-forgotten": (BAM, final_bn_forgotten, [check_bam_matches_formula]),
    "bn-ignores-running-stats": (BAM, bn_ignores_running_stats, [check_bam_matches_formula]),
    "relu-after-f2-forgotten": (BAM, relu_after_f2_forgotten, [check_bam_matches_formula]),
}


@pytest.mark.parametrize("variant", BAM.VARIANTS)
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_bam(variant, check):
    check(BAM(32, reduction=8, variant=variant))


def test_checks_accept_tiny_hidden_width():
    for variant in BAM.VARIANTS:
        for check in CHECKS:
            check(BAM(8, variant=variant))          # C < r: hidden width max(1, 8 // 16) = 1


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_bam(mutant):
    cls, breakage, checks = MUTANTS[mutant]
    for variant in BAM.VARIANTS:
        broken = cls(32, reduction=8, variant=variant)
        if breakage is not None:
            breakage(broken)
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)


def test_the_paper_and_official_combinations_differ():
    torch.manual_seed(0)
    m_c, m_s = torch.randn(2, 8, 1, 1), torch.randn(2, 1, 5, 7)
    paper, official = BAM(8, variant="paper"), BAM(8, variant="official")
    assert tuple(paper.combine(m_c, m_s).shape) == (2, 8, 5, 7)
    assert (paper.combine(m_c, m_s) - official.combine(m_c, m_s)).abs().max() > 0.1


def test_batch_of_one_fails_in_training_and_works_in_eval():
    for variant in BAM.VARIANTS:
        block = BAM(16, variant=variant)
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            block.train()(torch.randn(1, 16, 7, 9))
        assert tuple(block.eval()(torch.randn(1, 16, 7, 9)).shape) == (1, 16, 7, 9)
