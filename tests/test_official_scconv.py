"""Official SCNet weights load into SCConv and SCBottleneck (MCG-NKU/SCNet @ c0b5bd6, scnet.py).

The layouts are written from reading scnet.py: key names, shapes and order of SCConv (k2 = pool,
conv, BN; k3; k4) and SCBottleneck (conv1_a, bn1_a, conv1_b, bn1_b, k1, scconv, conv3, bn3,
downsample from SCNet._make_layer). The transcriptions of the official forward passes use those
names. No official code is needed here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attn_lib
from attn_lib.scconv import convert_official_state_dict


def rand(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def bn_layout(g, name, n):
    return {f"{name}.weight": rand(g, n, scale=0.3) + 1, f"{name}.bias": rand(g, n, scale=0.5),
            f"{name}.running_mean": rand(g, n, scale=0.5), f"{name}.running_var": rand(g, n).abs() + 0.5,
            f"{name}.num_batches_tracked": torch.tensor(3)}


def scconv_layout(g, c, prefix=""):
    sd = {}
    for conv, bn in (("k2.1", "k2.2"), ("k3.0", "k3.1"), ("k4.0", "k4.1")):
        sd[f"{prefix}{conv}.weight"] = rand(g, c, c, 3, 3, scale=0.2)
        sd.update(bn_layout(g, f"{prefix}{bn}", c))
    return sd


def block_layout(g, inplanes, planes, downsample, prefix=""):
    """SCBottleneck(inplanes, planes): group_width = planes // 2, conv3 to planes * 4."""
    w, sd = planes // 2, {}
    for half in ("a", "b"):
        sd[f"{prefix}conv1_{half}.weight"] = rand(g, w, inplanes, 1, 1, scale=0.3)
        sd.update(bn_layout(g, f"{prefix}bn1_{half}", w))
    sd[f"{prefix}k1.0.weight"] = rand(g, w, w, 3, 3, scale=0.2)
    sd.update(bn_layout(g, f"{prefix}k1.1", w))
    sd.update(scconv_layout(g, w, prefix + "scconv."))
    sd[f"{prefix}conv3.weight"] = rand(g, planes * 4, 2 * w, 1, 1, scale=0.3)
    sd.update(bn_layout(g, f"{prefix}bn3", planes * 4))
    if downsample:
        sd[f"{prefix}downsample.0.weight"] = rand(g, planes * 4, inplanes, 1, 1, scale=0.3)
        sd.update(bn_layout(g, f"{prefix}downsample.1", planes * 4))
    return sd


def bn(t, sd, name, training):
    return F.batch_norm(t, sd[f"{name}.running_mean"].clone(), sd[f"{name}.running_var"].clone(),
                        sd[f"{name}.weight"], sd[f"{name}.bias"], training, 0.1, 1e-5)


def scconv_forward(sd, x, training, stride=1, p=""):
    """SCConv.forward: sigmoid(identity + interpolate(k2(x), size)) * k3(x), then k4."""
    k2 = bn(F.conv2d(F.avg_pool2d(x, 4, 4), sd[p + "k2.1.weight"], padding=1), sd, p + "k2.2", training)
    out = torch.sigmoid(x + F.interpolate(k2, x.shape[2:]))                          # default mode: nearest
    out = bn(F.conv2d(x, sd[p + "k3.0.weight"], padding=1), sd, p + "k3.1", training) * out
    return bn(F.conv2d(out, sd[p + "k4.0.weight"], stride=stride, padding=1), sd, p + "k4.1", training)


def block_forward(sd, x, training, stride=1):
    """SCBottleneck.forward (avd off): relu(bn3(conv3([relu(k1(a)); relu(scconv(b))])) + residual)."""
    a = torch.relu(bn(F.conv2d(x, sd["conv1_a.weight"]), sd, "bn1_a", training))
    b = torch.relu(bn(F.conv2d(x, sd["conv1_b.weight"]), sd, "bn1_b", training))
    a = torch.relu(bn(F.conv2d(a, sd["k1.0.weight"], stride=stride, padding=1), sd, "k1.1", training))
    b = torch.relu(scconv_forward(sd, b, training, stride, "scconv."))
    out = bn(F.conv2d(torch.cat([a, b], dim=1), sd["conv3.weight"]), sd, "bn3", training)
    residual = x
    if "downsample.0.weight" in sd:
        residual = bn(F.conv2d(x, sd["downsample.0.weight"], stride=stride), sd, "downsample.1", training)
    return torch.relu(out + residual)


CASES = {   # name, layout, channels, create kwargs, forward, input (H, W)
    "scconv": ("scconv", lambda g: scconv_layout(g, 8), 8, {}, lambda sd, x, t: scconv_forward(sd, x, t), (13, 18)),
    "scconv-stride2": ("scconv", lambda g: scconv_layout(g, 8), 8, dict(stride=2),
                       lambda sd, x, t: scconv_forward(sd, x, t, 2), (13, 18)),
    "block-64-16": ("sc_bottleneck", lambda g: block_layout(g, 64, 16, False), 64, {}, block_forward, (12, 10)),
    "block-downsample": ("sc_bottleneck", lambda g: block_layout(g, 32, 16, True), 32, dict(out_channels=64, stride=2),
                         lambda sd, x, t: block_forward(sd, x, t, 2), (13, 18)),
}


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("case", list(CASES))
def test_official_layout_loads_and_matches_the_official_forward(case, training):
    name, layout, channels, kwargs, forward, hw = CASES[case]
    g = torch.Generator().manual_seed(0)
    sd = layout(g)
    m = attn_lib.load_official(name, sd, channels, **kwargs)                       # strict, float32
    assert list(convert_official_state_dict(sd)) == list(m.state_dict())
    m64 = attn_lib.create(name, channels, variant="official", **kwargs).double().train(training)
    m64.load_state_dict(convert_official_state_dict(sd))
    x = rand(g, 2, channels, *hw)
    with torch.no_grad():
        expected = forward(sd, x, training)
        torch.testing.assert_close(m64(x), expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(m.train(training)(x.float()).double(), expected, rtol=1e-4, atol=1e-4)


def test_blocks_of_a_released_scnet50_load_by_prefix():
    """scnet50's checkpoint (model_urls['scnet50'] in scnet.py) is a plain state dict of SCNet:
    layer1.0 is SCBottleneck(64, 64) with a downsample, layer1.1 SCBottleneck(256, 64). A block is
    loaded by stripping its prefix (we build the two blocks' keys as the network names them)."""
    g = torch.Generator().manual_seed(1)
    network = {**block_layout(g, 64, 64, True, "layer1.0."), **block_layout(g, 256, 64, False, "layer1.1.")}

    def block(prefix):
        return {k[len(prefix):]: v for k, v in network.items() if k.startswith(prefix)}

    first = attn_lib.load_official("sc_bottleneck", block("layer1.0."), 64, out_channels=256)
    second = attn_lib.load_official("sc_bottleneck", block("layer1.1."), 256)
    assert first.width == second.width == 32 and second.downsample is None
    sc = attn_lib.load_official("scconv", block("layer1.1.scconv."), 32)
    assert torch.equal(sc.k2[1].weight, network["layer1.1.scconv.k2.1.weight"].float())


def test_a_state_dict_of_the_wrong_width_is_refused_with_official_names():
    g = torch.Generator().manual_seed(2)
    with pytest.raises(ValueError, match=r"conv1_a\.weight"):
        attn_lib.load_official("sc_bottleneck", block_layout(g, 64, 16, False), 64, out_channels=128)
