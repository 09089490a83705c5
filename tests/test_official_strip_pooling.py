"""Official SPNet checkpoints load into the strip pooling modules (houqb/SPNet @ 5e97da3).

The layouts below are written from reading models/resnet.py (SPBlock) and models/customize.py
(StripPooling, the MPM): their key names, shapes and order. The transcriptions of the official
forward passes use those names. No official code is needed here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attn_lib
from attn_lib.strip_pooling import convert_official_state_dict

C = 8


def rand(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def bn_layout(g, name, n):
    return {f"{name}.weight": rand(g, n, scale=0.3) + 1, f"{name}.bias": rand(g, n, scale=0.5),
            f"{name}.running_mean": rand(g, n, scale=0.5), f"{name}.running_var": rand(g, n).abs() + 0.5,
            f"{name}.num_batches_tracked": torch.tensor(7)}


def spblock_layout(g, biases=False, prefix=""):
    """SPBlock(C, C): conv1 (3x1), bn1, conv2 (1x3), bn2, conv3 (1x1 with bias); before commit
    3ddee89 conv1 and conv2 also had biases."""
    sd = {}
    for conv, bn, kernel in (("conv1", "bn1", (3, 1)), ("conv2", "bn2", (1, 3))):
        sd[f"{prefix}{conv}.weight"] = rand(g, C, C, *kernel, scale=0.3)
        if biases:
            sd[f"{prefix}{conv}.bias"] = rand(g, C, scale=0.5)
        sd.update(bn_layout(g, f"{prefix}{bn}", C))
    sd[f"{prefix}conv3.weight"], sd[f"{prefix}conv3.bias"] = rand(g, C, C, 1, 1, scale=0.3), rand(g, C)
    return sd


MPM = [("conv1_1", 1, 0), ("conv1_2", 1, 0), ("conv2_0", 3, 1), ("conv2_1", 3, 1), ("conv2_2", 3, 1),
       ("conv2_3", (1, 3), (0, 1)), ("conv2_4", (3, 1), (1, 0)), ("conv2_5", 3, 1), ("conv2_6", 3, 1), ("conv3", 1, 0)]


def mpm_layout(g):
    h, sd = C // 4, {}
    for name, kernel, _ in MPM:
        c_in, c_out = {"conv1_1": (C, h), "conv1_2": (C, h), "conv3": (2 * h, C)}.get(name, (h, h))
        kernel = kernel if isinstance(kernel, tuple) else (kernel, kernel)
        sd[f"{name}.0.weight"] = rand(g, c_out, c_in, *kernel, scale=0.3)
        sd.update(bn_layout(g, f"{name}.1", c_out))
    return sd


def bn(t, sd, name, training):
    return F.batch_norm(t, sd[f"{name}.running_mean"].clone(), sd[f"{name}.running_var"].clone(),
                        sd[f"{name}.weight"], sd[f"{name}.bias"], training, 0.1, 1e-5)


def spblock_forward(sd, x, training):
    """Bottleneck: out * self.spm(out), with SPBlock.forward (pool1 (H, 1) -> conv1 -> bn1, pool2
    (1, W) -> conv2 -> bn2, expand, relu of the sum, conv3, sigmoid)."""
    h, w = x.shape[-2:]
    x1 = F.conv2d(F.adaptive_avg_pool2d(x, (None, 1)), sd["conv1.weight"], sd.get("conv1.bias"), padding=(1, 0))
    x2 = F.conv2d(F.adaptive_avg_pool2d(x, (1, None)), sd["conv2.weight"], sd.get("conv2.bias"), padding=(0, 1))
    x1 = bn(x1, sd, "bn1", training).expand(-1, -1, h, w)
    x2 = bn(x2, sd, "bn2", training).expand(-1, -1, h, w)
    return x * torch.sigmoid(F.conv2d(torch.relu(x1 + x2), sd["conv3.weight"], sd["conv3.bias"]))


def mpm_forward(sd, x, training):
    """StripPooling.forward of models/customize.py with pool_size (20, 12) and up_kwargs bilinear,
    align_corners=True."""
    h, w = x.shape[-2:]
    pad = {name: p for name, _, p in MPM}

    def block(t, name):
        return bn(F.conv2d(t, sd[f"{name}.0.weight"], padding=pad[name]), sd, f"{name}.1", training)

    def up(t):
        return F.interpolate(t, (h, w), mode="bilinear", align_corners=True)

    x1, x2 = torch.relu(block(x, "conv1_1")), torch.relu(block(x, "conv1_2"))
    x2_1 = block(x1, "conv2_0")
    x2_2 = up(block(F.adaptive_avg_pool2d(x1, 20), "conv2_1"))
    x2_3 = up(block(F.adaptive_avg_pool2d(x1, 12), "conv2_2"))
    x2_4 = up(block(F.adaptive_avg_pool2d(x2, (1, None)), "conv2_3"))
    x2_5 = up(block(F.adaptive_avg_pool2d(x2, (None, 1)), "conv2_4"))
    x1 = torch.relu(block(torch.relu(x2_1 + x2_2 + x2_3), "conv2_5"))
    x2 = torch.relu(block(torch.relu(x2_5 + x2_4), "conv2_6"))
    return torch.relu(x + block(torch.cat([x1, x2], dim=1), "conv3"))


CASES = {
    "spblock": ("strip_pooling", lambda g: spblock_layout(g), spblock_forward),
    "spblock-before-3ddee89": ("strip_pooling", lambda g: spblock_layout(g, biases=True), spblock_forward),
    "mpm": ("mixed_pooling", mpm_layout, mpm_forward),
}


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", list(CASES))
def test_official_layout_loads_and_matches_the_official_forward(case, training):
    name, layout, forward = CASES[case]
    g = torch.Generator().manual_seed(0)
    sd = layout(g)
    m = attn_lib.load_official(name, sd, C).train(training)          # float32, strict
    assert list(convert_official_state_dict(sd)) == list(m.state_dict())
    m64 = attn_lib.create(name, C, variant="official").double().train(training)
    m64.load_state_dict(convert_official_state_dict(sd))              # the same, in float64
    x = rand(g, 2, C, 11, 24)              # odd, non-square, smaller than the pool of 20 on one side
    with torch.no_grad():
        expected = forward(sd, x, training)
        torch.testing.assert_close(m64(x), expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(m(x.float()).double(), expected, rtol=1e-4, atol=1e-5)


def test_biases_of_old_checkpoints_are_folded_not_dropped():
    g = torch.Generator().manual_seed(1)
    sd = spblock_layout(g, biases=True)
    converted = convert_official_state_dict(sd)
    assert "conv_h.bias" not in converted and "conv_v.bias" not in converted
    torch.testing.assert_close(converted["bn_h.running_mean"], sd["bn1.running_mean"] - sd["conv1.bias"])
    torch.testing.assert_close(converted["bn_v.running_mean"], sd["bn2.running_mean"] - sd["conv2.bias"])
    assert sd["bn1.running_mean"] is not converted["bn_h.running_mean"]   # the input is left alone


def test_a_network_checkpoints_block_converts_with_its_prefix_kept():
    """Keys of a whole SPNet (pretrained.layer4.0.spm.conv1.weight ...) keep their prefix."""
    g = torch.Generator().manual_seed(2)
    sd = spblock_layout(g, biases=True, prefix="pretrained.layer4.0.spm.")
    converted = convert_official_state_dict(sd)
    assert list(converted)[:2] == ["pretrained.layer4.0.spm.conv_h.weight", "pretrained.layer4.0.spm.bn_h.weight"]
    assert not any(k.endswith("conv_h.bias") for k in converted)


def test_a_missing_mpm_key_is_named_with_its_official_name():
    g = torch.Generator().manual_seed(3)
    sd = mpm_layout(g)
    del sd["conv2_4.0.weight"]
    with pytest.raises(ValueError, match=r"conv2_4\.0\.weight"):
        attn_lib.load_official("mixed_pooling", sd, C)
    sd = spblock_layout(g)
    del sd["conv3.bias"]
    with pytest.raises(ValueError, match=r"conv3\.bias"):
        attn_lib.load_official("strip_pooling", sd, C)


def test_a_current_checkpoint_does_not_load_into_the_paper_variant():
    """The paper variant has 1-D biases and no BatchNorm: an official state dict must not fit it."""
    g = torch.Generator().manual_seed(4)
    with pytest.raises(RuntimeError):
        attn_lib.create("strip_pooling", C).load_state_dict(convert_official_state_dict(spblock_layout(g)))
