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
    m.squeeze = Reduce("b c h w -> b c", "max").forward          # an instance attribute hides the method


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


def test_batch_of_one_is_refused_in_training_and_works_in_eval():
    """Before: PyTorch's own BatchNorm1d error from inside. Now: a ValueError naming BAM, what it
    needs and the shape."""
    for variant in BAM.VARIANTS:
        block = BAM(16, variant=variant)
        with pytest.raises(ValueError, match=r"BAM in training mode needs a batch of at least 2.*\(1, 16, 7, 9\)"):
            block.train()(torch.randn(1, 16, 7, 9))
        assert tuple(block.eval()(torch.randn(1, 16, 7, 9)).shape) == (1, 16, 7, 9)
        assert tuple(block.train()(torch.randn(2, 16, 1, 1)).shape) == (2, 16, 1, 1)


def test_min_width():
    for variant in BAM.VARIANTS:
        m = BAM(16, min_width=8, variant=variant)
        assert m.channel_gate.fc0.out_features == 8 and m.spatial_gate.f0.out_channels == 8
        for check in CHECKS:
            check(m)
    assert BAM(256, min_width=8).channel_gate.fc0.out_features == 16
    with pytest.raises(ValueError, match="min_width"):
        BAM(16, min_width=0)


def test_official_initialisation_is_the_one_of_model_resnet():
    """MODELS/model_resnet.py, ResNet.__init__: conv weights kaiming_normal(fan_out), BN weights 1,
    every bias 0; the Linear weights keep PyTorch's default."""
    torch.manual_seed(0)
    m = BAM(64, variant="official")
    paper = BAM(64)
    for name, p in m.named_parameters():
        if name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
    for layer in m.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            assert torch.equal(layer.weight, torch.ones_like(layer.weight))
    for name, fan_out in (("f0", 4), ("f1", 36), ("f2", 36)):
        conv = getattr(m.spatial_gate, name)
        assert 0.75 < conv.weight.std().item() / (2 / fan_out) ** 0.5 < 1.33, name
    assert not torch.equal(paper.spatial_gate.f0.bias, torch.zeros(4))          # paper: PyTorch's default
    assert 0.75 < m.channel_gate.fc0.weight.std().item() / paper.channel_gate.fc0.weight.std().item() < 1.33


# MODELS/bam.py at 459efad, BAM(gate_channel=C) (reduction 16, dilation 4): keys, shapes, order
def official_layout(c):
    k = c // 16
    layout = [("channel_att.gate_c.gate_c_fc_0.weight", (k, c)), ("channel_att.gate_c.gate_c_fc_0.bias", (k,))]
    layout += [(f"channel_att.gate_c.gate_c_bn_1.{s}", (k,)) for s in ("weight", "bias", "running_mean", "running_var")]
    layout += [("channel_att.gate_c.gate_c_bn_1.num_batches_tracked", ()),
               ("channel_att.gate_c.gate_c_fc_final.weight", (c, k)), ("channel_att.gate_c.gate_c_fc_final.bias", (c,))]
    for conv, bn, c_in, size in (("conv_reduce0", "bn_reduce0", c, 1), ("conv_di_0", "bn_di_0", k, 3),
                                 ("conv_di_1", "bn_di_1", k, 3)):
        layout += [(f"spatial_att.gate_s.gate_s_{conv}.weight", (k, c_in, size, size)),
                   (f"spatial_att.gate_s.gate_s_{conv}.bias", (k,))]
        layout += [(f"spatial_att.gate_s.gate_s_{bn}.{s}", (k,)) for s in ("weight", "bias", "running_mean", "running_var")]
        layout += [(f"spatial_att.gate_s.gate_s_{bn}.num_batches_tracked", ())]
    layout += [("spatial_att.gate_s.gate_s_conv_final.weight", (1, k, 1, 1)),
               ("spatial_att.gate_s.gate_s_conv_final.bias", (1,))]
    return layout


def official_bam_forward(x, sd, eps=1e-5):
    """BAM.forward of MODELS/bam.py (eval mode), written out: att = 1 + sigmoid(channel * spatial)."""
    def bn(v, prefix):
        shape = (1, -1) + (1,) * (v.dim() - 2)
        mean, var = sd[prefix + "running_mean"].view(shape), sd[prefix + "running_var"].view(shape)
        return (v - mean) / torch.sqrt(var + eps) * sd[prefix + "weight"].view(shape) + sd[prefix + "bias"].view(shape)

    c, s = "channel_att.gate_c.gate_c_", "spatial_att.gate_s.gate_s_"
    pooled = nn.functional.avg_pool2d(x, x.size(2), stride=x.size(2)).flatten(1)
    h = torch.relu(bn(pooled @ sd[c + "fc_0.weight"].T + sd[c + "fc_0.bias"], c + "bn_1."))
    channel = (h @ sd[c + "fc_final.weight"].T + sd[c + "fc_final.bias"])[:, :, None, None]
    y = x
    for conv, norm, d in (("conv_reduce0", "bn_reduce0", 1), ("conv_di_0", "bn_di_0", 4), ("conv_di_1", "bn_di_1", 4)):
        y = nn.functional.conv2d(y, sd[s + conv + ".weight"], sd[s + conv + ".bias"], padding=d if d > 1 else 0, dilation=d)
        y = torch.relu(bn(y, s + norm + "."))
    spatial = nn.functional.conv2d(y, sd[s + "conv_final.weight"], sd[s + "conv_final.bias"])
    return (1 + torch.sigmoid(channel * spatial)) * x


def test_an_official_state_dict_loads_and_matches_the_official_forward():
    import attn_lib
    from attn_lib.bam import convert_official_state_dict

    g = torch.Generator().manual_seed(0)
    sd = {k: (0.5 * torch.randn(s, generator=g) if s else torch.tensor(3)) for k, s in official_layout(32)}
    for k in sd:
        if k.endswith("running_var"):
            sd[k] = torch.rand(sd[k].shape, generator=g) + 0.5
    block = attn_lib.load_official("bam", sd, 32).double().eval()
    assert list(convert_official_state_dict(sd)) == list(block.state_dict())
    x = torch.randn(2, 32, 9, 9, generator=g, dtype=torch.float64) + 1.0
    sd64 = {k: v.double() for k, v in sd.items()}
    with torch.no_grad():
        torch.testing.assert_close(block(x), official_bam_forward(x, sd64), rtol=1e-10, atol=1e-12)
