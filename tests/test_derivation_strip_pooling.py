"""The strip pooling chapter's derivation checks accept the SPM and the MPM and reject
deliberately broken versions of them."""

import pytest
import torch
from einops.layers.torch import Reduce
from torch import nn

from attn_lib.checks.strip_pooling import (
    check_adaptive_pools,
    check_bar_lights_its_row,
    check_mixed_pooling_matches_formula,
    check_strip_pooling_matches_formula,
    check_strips_are_row_and_column_means,
)
from attn_lib.strip_pooling import MixedPooling, StripPooling

SPM_CHECKS = [check_strip_pooling_matches_formula, check_strips_are_row_and_column_means, check_bar_lights_its_row]
MPM_CHECKS = [check_adaptive_pools, check_mixed_pooling_matches_formula]


# ---------------------------------------------------------------- SPM mutants
class SwappedStrips(StripPooling):
    """Broken: the 3x1 (along-H) conv runs on the 1 x W strip and the 1x3 conv on the H x 1 strip."""

    def strips(self, x):
        y_h = self.bn_h(self.conv_v(self.pool_h(x)))
        y_v = self.bn_v(self.conv_h(self.pool_v(x)))
        return y_h, y_v


class ProductFusion(StripPooling):
    """Broken: y = y^h * y^v instead of y^h + y^v."""

    def gate(self, x):
        y_h, y_v = self.strips(x)
        return self.sigmoid(self.fuse(self.act(y_h * y_v)))


def sum_without_mean(m):
    m.pool_h = Reduce("b c h w -> b c h 1", "sum").forward      # an instance attribute hides the method


def no_sigmoid(m):
    m.sigmoid = nn.Identity()


SPM_MUTANTS = {
    "swapped-strips": (SwappedStrips, lambda m: None, [check_strip_pooling_matches_formula]),
    "sum-not-mean": (StripPooling, sum_without_mean, [check_strip_pooling_matches_formula, check_strips_are_row_and_column_means]),
    "no-sigmoid": (StripPooling, no_sigmoid, [check_strip_pooling_matches_formula, check_bar_lights_its_row]),
    "product-fusion": (ProductFusion, lambda m: None, [check_strip_pooling_matches_formula]),
}


# ---------------------------------------------------------------- MPM mutants
class NearestPool(nn.Module):
    """Broken adaptive pooling: nearest-neighbour resampling to size x size."""

    def __init__(self, size):
        super().__init__()
        self.size = size

    def forward(self, x):
        return nn.functional.interpolate(x, size=(self.size, self.size), mode="nearest")


class MPMSwappedStrips(MixedPooling):
    """Broken: each strip gets the other strip's 1-D conv."""

    def long_range(self, x):
        y = self.strip_conv_h(self.pool_v(x)) + self.strip_conv_v(self.pool_h(x))
        return self.long_out(torch.relu(y))


class MPMNoFinalReLU(MixedPooling):
    """Broken: returns x + out, without the final ReLU."""

    def forward(self, x):
        short = self.short_range(self.reduce_short(x))
        long = self.long_range(self.reduce_long(x))
        return x + self.project(torch.cat([short, long], dim=1))


def nearest_pools(m):
    m.pools = nn.ModuleList(NearestPool(p) for p in m.pool_sizes)


MPM_MUTANTS = {
    "nearest-pools": (MixedPooling, nearest_pools, MPM_CHECKS),
    "swapped-strips": (MPMSwappedStrips, lambda m: None, [check_mixed_pooling_matches_formula]),
    "no-final-relu": (MPMNoFinalReLU, lambda m: None, [check_mixed_pooling_matches_formula]),
}


@pytest.mark.parametrize("variant", StripPooling.VARIANTS)
@pytest.mark.parametrize("check", SPM_CHECKS, ids=lambda f: f.__name__)
def test_checks_accept_strip_pooling(variant, check):
    check(StripPooling(12, variant=variant))


@pytest.mark.parametrize("check", MPM_CHECKS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("pool_sizes", [(20, 12), (3, 2)], ids=str)
def test_checks_accept_mixed_pooling(check, pool_sizes):
    check(MixedPooling(12, pool_sizes=pool_sizes))


@pytest.mark.parametrize("mutant", list(SPM_MUTANTS), ids=str)
def test_checks_reject_broken_strip_pooling(mutant):
    cls, breakage, checks = SPM_MUTANTS[mutant]
    for variant in StripPooling.VARIANTS:
        broken = cls(12, variant=variant)
        breakage(broken)
        x = torch.randn(2, 12, 7, 9)
        with torch.no_grad():
            assert not torch.allclose(broken.eval()(x), _intact(broken)(x)), "the mutant must change the output"
        for check in checks:
            with pytest.raises(AssertionError):
                check(broken)


@pytest.mark.parametrize("mutant", list(MPM_MUTANTS), ids=str)
def test_checks_reject_broken_mixed_pooling(mutant):
    cls, breakage, checks = MPM_MUTANTS[mutant]
    broken = cls(12)
    breakage(broken)
    x = torch.randn(2, 12, 7, 9)
    with torch.no_grad():
        assert not torch.allclose(broken.eval()(x), _intact(broken)(x)), "the mutant must change the output"
    for check in checks:
        with pytest.raises(AssertionError):
            check(broken)


def _intact(broken):
    """A correct module of the mutant's class family with the mutant's weights."""
    cls = MixedPooling if isinstance(broken, MixedPooling) else StripPooling
    kwargs = dict(pool_sizes=broken.pool_sizes) if cls is MixedPooling else {}
    intact = cls(broken.channels, variant=broken.variant, **kwargs).eval()
    intact.load_state_dict(broken.state_dict())
    return intact


class OfficialWithoutReLU(StripPooling):
    """Broken official SPM: no ReLU on the fused strips (SPBlock has one)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.act = nn.Identity()


class OfficialWithoutBN(StripPooling):
    """Broken official SPM: no BatchNorm after the 1-D convolutions (SPBlock has them)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bn_h, self.bn_v = nn.Identity(), nn.Identity()


def mpm_short_out_without_relu(m):
    """Broken MPM: conv2_5 without its ReLU."""
    m.short_out = nn.Sequential(*list(m.short_out)[:2])


class OfficialWithBiases(StripPooling):
    """Broken official SPM: 1-D convolutions with biases, as SPBlock had them before commit 3ddee89
    (the defect of issue 8: the official variant must have exactly SPBlock's tensors)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c = self.channels
        self.conv_h = nn.Conv2d(c, c, (3, 1), padding=(1, 0))
        self.conv_v = nn.Conv2d(c, c, (1, 3), padding=(0, 1))


@pytest.mark.parametrize("cls", [OfficialWithoutReLU, OfficialWithoutBN, OfficialWithBiases], ids=lambda c: c.__name__)
def test_formula_rejects_official_spm_without_its_extras(cls):
    broken = cls(12, variant="official")
    broken.eval()(torch.randn(2, 12, 7, 9))              # the mutant runs
    with pytest.raises(AssertionError):
        check_strip_pooling_matches_formula(broken)


def test_formula_rejects_mpm_with_a_missing_relu():
    broken = MixedPooling(12)
    mpm_short_out_without_relu(broken)
    broken.eval()(torch.randn(2, 12, 7, 9))              # the mutant runs
    with pytest.raises(AssertionError):
        check_mixed_pooling_matches_formula(broken)


def test_paper_variant_is_official_without_bn_and_relu():
    """With the same convolutions (the paper's 1-D biases at zero), BN at its initial state
    (identity up to eps) and the ReLU removed, the official form computes the paper's output."""
    paper = StripPooling(8).double().eval()
    official = StripPooling(8, variant="official").double().eval()
    with torch.no_grad():
        paper.conv_h.bias.zero_()
        paper.conv_v.bias.zero_()
    official.load_state_dict(paper.state_dict(), strict=False)
    official.act = nn.Identity()
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(official(x), paper(x), rtol=1e-4, atol=1e-5)   # BN eps only


BN_KEYS = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def test_official_state_dict_has_exactly_spblocks_tensors_in_its_order():
    """SPBlock of houqb/SPNet models/resnet.py @ 5e97da3: conv1 (3x1, bias=False), bn1, conv2 (1x3,
    bias=False), bn2, conv3 (1x1, bias=True), registered in that order."""
    shapes = {k: tuple(v.shape) for k, v in StripPooling(8, variant="official").state_dict().items()}
    expected = (["conv_h.weight"] + [f"bn_h.{k}" for k in BN_KEYS] + ["conv_v.weight"]
                + [f"bn_v.{k}" for k in BN_KEYS] + ["fuse.weight", "fuse.bias"])
    assert list(shapes) == expected
    assert shapes["conv_h.weight"] == (8, 8, 3, 1) and shapes["conv_v.weight"] == (8, 8, 1, 3)
    assert shapes["fuse.weight"] == (8, 8, 1, 1) and shapes["fuse.bias"] == (8,)


def test_paper_state_dict_keeps_the_formula_tensors():
    keys = list(StripPooling(8).state_dict())
    assert keys == ["conv_h.weight", "conv_h.bias", "conv_v.weight", "conv_v.bias", "fuse.weight", "fuse.bias"]


def test_mixed_pooling_official_is_the_paper_module():
    """The official StripPooling (MPM) computes what the chapter's MPM computes: both variants build
    the same module, with the official order of its ten (conv, BN) blocks."""
    paper, official = MixedPooling(12).eval(), MixedPooling(12, variant="official").eval()
    assert list(paper.state_dict()) == list(official.state_dict())
    official.load_state_dict(paper.state_dict())
    x = torch.randn(2, 12, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(official(x), paper(x), rtol=0, atol=0)
    blocks = []
    for key in paper.state_dict():
        head = key.rsplit(".", 2)[0] if key.count(".") >= 2 else key
        if head not in blocks:
            blocks.append(head)
    assert blocks == ["reduce_short", "reduce_long", "local", "pool_convs.0", "pool_convs.1", "strip_conv_v",
                      "strip_conv_h", "short_out", "long_out", "project"]


def test_mixed_pooling_min_width():
    assert MixedPooling(8).hidden == 2 and MixedPooling(8, min_width=4).hidden == 4
    assert MixedPooling(2).hidden == 1          # the official int(C / 4) would be 0
    with pytest.raises(ValueError, match="MixedPooling"):
        MixedPooling(8, min_width=0)


@pytest.mark.parametrize("build", [lambda: StripPooling(8, variant="official"), lambda: MixedPooling(8)],
                         ids=["spm-official", "mpm"])
@pytest.mark.parametrize("hw", [(1, 9), (7, 1), (1, 1)])
def test_batch_of_one_with_a_strip_of_one_value_is_refused_in_training(build, hw):
    m = build().train()
    x = torch.randn(1, 8, *hw)
    with pytest.raises(ValueError) as info:
        m(x)
    assert type(m).__name__ in str(info.value) and str(tuple(x.shape)) in str(info.value)
    assert m.eval()(x).shape == x.shape                         # eval mode: running statistics
    assert build().train()(torch.randn(2, 8, *hw)).shape == (2, 8, *hw)   # two samples: fine


def test_paper_spm_trains_on_a_batch_of_one_with_a_one_row_map():
    assert StripPooling(8).train()(torch.randn(1, 8, 1, 9)).shape == (1, 8, 1, 9)   # no BatchNorm


def test_pools_larger_than_the_map_and_tiny_maps():
    m = MixedPooling(8).eval()
    for hw in [(1, 1), (7, 9), (2, 33)]:
        assert m(torch.randn(1, 8, *hw)).shape == (1, 8, *hw)
