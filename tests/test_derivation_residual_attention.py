"""The Residual Attention chapter's derivation checks accept the module (every variant and
normalisation) and reject deliberately broken versions of it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_lib.checks.residual_attention import (
    check_fusion_is_one_plus_mask_times_trunk,
    check_mask_range,
    check_residual_attention_matches_formula,
)
from attn_lib.residual_attention import ResidualAttention

CHECKS = [check_residual_attention_matches_formula, check_fusion_is_one_plus_mask_times_trunk, check_mask_range]
FORMULA = [check_residual_attention_matches_formula]
CONFIGS = [("paper", "mixed"), ("paper", "channel"), ("paper", "spatial"), ("official", "mixed")]


def _up(h, size):
    return F.interpolate(h, size=size, mode="bilinear", align_corners=True)


def _double_and_crop(h, size):
    """Broken upsampling: twice the size, then cut to fit (wrong grid on odd sides)."""
    h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=True)
    return h[..., : size[0], : size[1]]


class _MaskPath(ResidualAttention):
    """The module's mask branch with the upsampling and the skip made replaceable."""

    upsample = staticmethod(_up)
    use_skip = True

    def mask_logits(self, x0):
        h, downs = x0, []
        for k in range(self.depth):
            h = self.down[k](self.pool(h))
            downs.append(h)
        for k in reversed(range(self.depth - 1)):
            level = self.up[str(k)]
            s = level.skip(downs[k])
            h = self.upsample(h, s.shape[-2:]) + (s if self.use_skip else 0)
            h = level.units(h)
        return self.head(self.upsample(h, x0.shape[-2:]))


class SameMaskPath(_MaskPath):
    """Not broken: the replaceable mask path with the module's own choices."""


class DoubleAndCrop(_MaskPath):
    upsample = staticmethod(_double_and_crop)


class MissingSkip(_MaskPath):
    use_skip = False


class NoSigmoid(ResidualAttention):
    def normalise(self, e):
        return e if self.attention == "mixed" else super().normalise(e)


class MaskTimesTrunk(ResidualAttention):
    """M * T: the attention without the identity path."""

    def forward(self, x):
        x0 = self.pre(x)
        return self.post(self.mask(x0) * self.trunk(x0))


class TanhMask(ResidualAttention):
    """The first upload of the prototxts (commit a80220a): the mask ends in TanH; df8f62c replaced
    it by Sigmoid, the layer of the files at bc207a8."""

    def normalise(self, e):
        return torch.tanh(e) if self.attention == "mixed" else super().normalise(e)


class ChannelNormOverSpace(ResidualAttention):
    def normalise(self, e):
        return F.normalize(e, dim=(2, 3)) if self.attention == "channel" else super().normalise(e)


class SpatialStatsOverChannels(ResidualAttention):
    def normalise(self, e):
        if self.attention != "spatial":
            return super().normalise(e)
        mean = e.mean(dim=1, keepdim=True)
        std = (e.var(dim=1, keepdim=True, unbiased=False) + self.eps).sqrt()
        return torch.sigmoid((e - mean) / std)


def average_pool(m):
    if m.variant == "official":
        m.pool = nn.AvgPool2d(3, stride=2, ceil_mode=True)
    else:
        m.pool = nn.AvgPool2d(3, stride=2, padding=1)


def official_pool_in_paper(m):
    m.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)


def padded_pool_in_official(m):
    m.pool = nn.MaxPool2d(3, stride=2, padding=1)


def r_units_at_the_bottom(m):
    """Broken: r units at the bottom of the mask branch instead of the paper's 2r."""
    m.down[-1] = nn.Sequential(*list(m.down[-1])[: m.r])


PAPER_MIXED = [("paper", "mixed")]
MIXED = [("paper", "mixed"), ("official", "mixed")]
MUTANTS = {
    # name: (class, breakage, configurations, checks that must reject it)
    "no-sigmoid": (NoSigmoid, None, MIXED, [check_residual_attention_matches_formula, check_mask_range]),
    "mask-times-trunk": (MaskTimesTrunk, None, MIXED, [check_residual_attention_matches_formula,
                                                         check_fusion_is_one_plus_mask_times_trunk]),
    "double-and-crop": (DoubleAndCrop, None, PAPER_MIXED, FORMULA),
    "missing-skip": (MissingSkip, None, MIXED, FORMULA),
    "average-pool": (ResidualAttention, average_pool, MIXED, FORMULA),
    "caffe-pool-in-paper": (ResidualAttention, official_pool_in_paper, PAPER_MIXED, FORMULA),
    "padded-pool-in-official": (ResidualAttention, padded_pool_in_official, [("official", "mixed")], FORMULA),
    "r-units-at-the-bottom": (ResidualAttention, r_units_at_the_bottom, MIXED, FORMULA),
    # the defect of issue 8: the official variant ended its mask in TanH (the first upload)
    "tanh-mask": (TanhMask, None, MIXED, [check_residual_attention_matches_formula, check_mask_range]),
    "channel-norm-over-space": (ChannelNormOverSpace, None, [("paper", "channel")],
                                [check_residual_attention_matches_formula, check_mask_range]),
    "spatial-stats-over-channels": (SpatialStatsOverChannels, None, [("paper", "spatial")],
                                    [check_residual_attention_matches_formula, check_mask_range]),
}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(c))
@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_residual_attention(config, check):
    variant, attention = config
    for depth in (1, 2) if config == ("paper", "mixed") else (2,):
        check(ResidualAttention(8, depth=depth, attention=attention, variant=variant))


def test_replaceable_mask_path_is_the_module():
    """The mutants below change one thing in this path; unchanged, it passes every check."""
    check_residual_attention_matches_formula(SameMaskPath(8))
    check_residual_attention_matches_formula(SameMaskPath(8, variant="official"))


@pytest.mark.parametrize("mutant", list(MUTANTS), ids=str)
def test_checks_reject_broken_residual_attention(mutant):
    cls, breakage, configs, checks = MUTANTS[mutant]
    for variant, attention in configs:
        broken = cls(8, attention=attention, variant=variant)
        if breakage is not None:
            breakage(broken)
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)


def test_official_refuses_maps_its_pools_cannot_reduce():
    with pytest.raises(ValueError, match=r"H, W >= 4.*\(2, 8, 1, 1\)"):
        ResidualAttention(8, variant="official")(torch.randn(2, 8, 1, 1))
    with pytest.raises(ValueError, match=r"H, W >= 4.*\(2, 8, 3, 9\)"):
        ResidualAttention(8, variant="official").eval()(torch.randn(2, 8, 3, 9))     # 3 -> 1 -> no pool
    assert ResidualAttention(8, variant="official").eval()(torch.randn(2, 8, 4, 9)).shape == (2, 8, 4, 9)
    assert ResidualAttention(8).eval()(torch.randn(2, 8, 1, 1)).shape == (2, 8, 1, 1)   # padded pools: any side
    with pytest.raises(ValueError, match="official"):
        ResidualAttention(8, attention="spatial", variant="official")


def test_official_mask_is_the_released_sigmoid():
    """imagenet_model/*-deploy.prototxt at bc207a8 end every mask in a Sigmoid layer: the official
    variant's mask equals the paper variant's with the same weights wherever the pools agree
    (a 2 x 2 map, which both pools reduce to one window over the whole map)."""
    paper, official = ResidualAttention(8, depth=1).double().eval(), ResidualAttention(8, depth=1, variant="official")
    official = official.double().eval()
    official.load_state_dict(paper.state_dict())
    x = torch.randn(2, 8, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(official(x), paper(x), rtol=1e-12, atol=1e-12)
        m = official.mask(official.pre(x))
    assert bool(((m > 0) & (m < 1)).all())


def test_batch_of_one_in_train_with_a_one_by_one_level_is_refused_clearly():
    m = ResidualAttention(8).train()
    with pytest.raises(ValueError, match=r"ResidualAttention in train mode.*\(1, 8, 3, 3\)"):
        m(torch.randn(1, 8, 3, 3))                                   # 3 -> 2 -> 1: BatchNorm sees one value
    assert m(torch.randn(2, 8, 3, 3)).shape == (2, 8, 3, 3)
