"""variant="official" of residual_attention computes what the released Caffe networks compute, and
loads their layers by their Caffe names.

The official release (github.com/fwang91/residual-attention-network at bc207a8) is Caffe deploy
prototxts, with no weights and no PyTorch code, so tests/fixtures/official has no recorded file
for it (tests/test_official.py skips the name). Instead this file holds, written by hand from
imagenet_model/Attention-56-deploy.prototxt, the layers of three attention modules (AttentionA_1,
AttentionB_1, AttentionC_1: 3, 2 and 1 pooling levels) with their names, bottoms, tops, blob
shapes and order, fills the blobs with random values, loads them with attn_lib.load_official and
compares the module with a plain transcription of the Caffe forward pass (layer by layer, in the
prototxt's order). Where the mirror of the repository is present, the hand-written layer lists
are also checked against the prototxt itself, and the TanH -> Sigmoid history against git.

Blob layout (the convention convert_official_state_dict documents): Convolution "L.weight";
the authors' BN layer (buptwangfei/caffe at d0f0f95, src/caffe/layers/bn_layer.cpp: four blobs
of shape (1, C)) "L.weight" (slope), "L.bias", "L.running_mean", "L.running_inv_std" (the
blob the layer multiplies by in its test phase, a moving average of 1 / sqrt(var + eps))."""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import attn_lib
from attn_lib.residual_attention import ResidualAttention, convert_official_state_dict

C = 16                         # the prototxt's stage widths are 256, 512, 1024; C / 4 inside the units
EPS = 1e-5                     # BNParameter's default eps in the fork's caffe.proto (not set in the deploy files)
REPO = "fwang91+residual-attention-network"
COMMIT = "bc207a8885168550723d19270f52c8c9c795c7ba"
FIRST_UPLOAD, SIGMOID_COMMIT = "a80220a", "df8f62c"
PROTOTXT = "imagenet_model/Attention-56-deploy.prototxt"


# ---------------------------------------------------------------------------------------------
# The layers of three attention modules, as imagenet_model/Attention-56-deploy.prototxt writes
# them: (type, name, bottoms, top, blob shape or parameter). A pre-activation unit is always the
# same ten layers; the BN of its input is named after the input blob.
# ---------------------------------------------------------------------------------------------
def unit(name: str, bottom: str) -> list:
    """The layers of one unit `name` whose raw input blob is `bottom` (the Eltwise sum adds it)."""
    b, h = name + "/branch1/", C // 4
    return [
        ("BN", bottom + "/bn", [bottom], bottom + "/bn", (1, C)),
        ("ReLU", bottom + "/bn/relu", [bottom + "/bn"], bottom + "/bn", None),
        ("Convolution", b + "conv1_1x1", [bottom + "/bn"], b + "conv1_1x1", (h, C, 1, 1)),
        ("BN", b + "conv1_1x1/bn", [b + "conv1_1x1"], b + "conv1_1x1/bn", (1, h)),
        ("ReLU", b + "conv1_1x1/bn/relu", [b + "conv1_1x1/bn"], b + "conv1_1x1/bn", None),
        ("Convolution", b + "conv2_3x3", [b + "conv1_1x1/bn"], b + "conv2_3x3", (h, h, 3, 3)),
        ("BN", b + "conv2_3x3/bn", [b + "conv2_3x3"], b + "conv2_3x3/bn", (1, h)),
        ("ReLU", b + "conv2_3x3/bn/relu", [b + "conv2_3x3/bn"], b + "conv2_3x3/bn", None),
        ("Convolution", b + "conv3_1x1", [b + "conv2_3x3/bn"], b + "conv3_1x1", (C, h, 1, 1)),
        ("Eltwise", name, [b + "conv3_1x1", bottom], name, "SUM"),
    ]


def pool(name: str, bottom: str) -> list:
    return [("Pooling", name, [bottom], name, "MAX 3 2")]


def interp(name: str, bottom: str, like: str) -> list:
    return [("Interp", name, [bottom, like], name, None)]


def eltwise(name: str, a: str, b: str, op: str = "SUM") -> list:
    return [("Eltwise", name, [a, b], name, op)]


def head_and_fusion(m: str, top_of_mask: str) -> list:
    """interp_1 to the trunk's size, BN-ReLU-linear_1, BN-ReLU-linear_2, Sigmoid, (1 + M) T, post unit."""
    k = m + "/mask/"
    return (interp(k + "up_sample/interp_1", top_of_mask, m + "/trunk/res3") + [
        ("BN", k + "up_sample/interp_1/bn", [k + "up_sample/interp_1"], k + "up_sample/interp_1/bn", (1, C)),
        ("ReLU", k + "up_sample/interp_1/bn/relu", [k + "up_sample/interp_1/bn"], k + "up_sample/interp_1/bn", None),
        ("Convolution", k + "linear_1", [k + "up_sample/interp_1/bn"], k + "linear_1", (C, C, 1, 1)),
        ("BN", k + "linear_1/bn", [k + "linear_1"], k + "linear_1/bn", (1, C)),
        ("ReLU", k + "linear_1/bn/relu", [k + "linear_1/bn"], k + "linear_1/bn", None),
        ("Convolution", k + "linear_2", [k + "linear_1/bn"], k + "linear_2", (C, C, 1, 1)),
        ("Sigmoid", m + "/mask", [k + "linear_2"], m + "/mask", None),
    ] + eltwise(m + "_residual", m + "/trunk/res3", m + "/mask", "PROD")
      + eltwise(m + "/fusion", m + "_residual", m + "/trunk/res3")
      + unit(m, m + "/fusion"))


def trunk(m: str, bottom: str) -> list:
    return unit(m + "/trunk/res1", bottom) + unit(m + "/trunk/res2", m + "/trunk/res1") \
        + unit(m + "/trunk/res3", m + "/trunk/res2")


def attention_a1() -> list:
    """AttentionA_1 (stage 1, 56 x 56 in the network): three pooling levels."""
    m, d, u = "AttentionA_1", "AttentionA_1/mask/down_sample/", "AttentionA_1/mask/up_sample"
    return (trunk(m, "pre_res_1")
            + pool(d + "pool1_3x3_s2", m + "/trunk/res1") + unit(d + "res1_1", d + "pool1_3x3_s2")
            + pool(d + "pool2_3x3_s2", d + "res1_1") + unit(d + "res2_1", d + "pool2_3x3_s2")
            + pool(d + "pool3_3x3_s2", d + "res2_1") + unit(d + "res3_1", d + "pool3_3x3_s2")
            + unit(d + "res3_2", d + "res3_1")
            + interp(u + "/interp_3", d + "res3_2", d + "res2_1")
            + unit(m + "/mask/skip/res2", d + "res2_1")
            + eltwise(u + "2", m + "/mask/skip/res2", u + "/interp_3") + unit(u + "/res2_1", u + "2")
            + interp(u + "/interp_2", u + "/res2_1", d + "res1_1")
            + unit(m + "/mask/skip/res1", d + "res1_1")
            + eltwise(u + "1", m + "/mask/skip/res1", u + "/interp_2") + unit(u + "/res1_1", u + "1")
            + head_and_fusion(m, u + "/res1_1"))


def attention_b1() -> list:
    """AttentionB_1 (stage 2, 28 x 28): two pooling levels."""
    m, d, u = "AttentionB_1", "AttentionB_1/mask/down_sample/", "AttentionB_1/mask/up_sample"
    return (trunk(m, "pre_res_2")
            + pool(d + "pool1_3x3_s2", m + "/trunk/res1") + unit(d + "res1_1", d + "pool1_3x3_s2")
            + pool(d + "pool2_3x3_s2", d + "res1_1") + unit(d + "res2_1", d + "pool2_3x3_s2")
            + unit(d + "res2_2", d + "res2_1")
            + interp(u + "/interp_2", d + "res2_2", d + "res1_1")
            + unit(m + "/mask/skip/res1", d + "res1_1")
            + eltwise(u + "1", m + "/mask/skip/res1", u + "/interp_2") + unit(u + "/res1_1", u + "1")
            + head_and_fusion(m, u + "/res1_1"))


def attention_c1() -> list:
    """AttentionC_1 (stage 3, 14 x 14): one pooling level, no skip."""
    m, d = "AttentionC_1", "AttentionC_1/mask/down_sample/"
    return (trunk(m, "pre_res_3")
            + pool(d + "pool1_3x3_s2", m + "/trunk/res1") + unit(d + "res1_1", d + "pool1_3x3_s2")
            + unit(d + "res1_2", d + "res1_1")
            + head_and_fusion(m, d + "res1_2"))


MODULES = {  # name: (layers, its input blob, depth, two input sizes: even and odd sides)
    "AttentionA_1": (attention_a1(), "pre_res_1", 3, [(16, 12), (13, 11)]),
    "AttentionB_1": (attention_b1(), "pre_res_2", 2, [(8, 10), (7, 9)]),
    "AttentionC_1": (attention_c1(), "pre_res_3", 1, [(4, 6), (5, 7)]),
}
WIDTHS = {"AttentionA_1": 256, "AttentionB_1": 512, "AttentionC_1": 1024}   # C in the prototxt


def random_blobs(layers: list, seed: int = 0) -> dict:
    """Every blob of every layer, in the layers' order, as a Caffe -> PyTorch dump names them."""
    g = torch.Generator().manual_seed(seed)
    blobs = {}
    for kind, name, _, _, shape in layers:
        if kind == "Convolution":
            blobs[name + ".weight"] = torch.randn(shape, generator=g, dtype=torch.float64) * 0.3
        elif kind == "BN":
            blobs[name + ".weight"] = 1 + 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
            blobs[name + ".bias"] = 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
            blobs[name + ".running_mean"] = 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
            blobs[name + ".running_inv_std"] = 0.5 + torch.rand(shape, generator=g, dtype=torch.float64)
    return blobs


# ---------------------------------------------------------------------------------------------
# The Caffe forward pass, one layer at a time (float64).
# ---------------------------------------------------------------------------------------------
def caffe_bn(x, blobs, name, train):
    """The fork's BN layer: test phase (or frozen) (x - mean) * inv_std * slope + shift; train
    phase (not frozen) the batch mean and 1 / sqrt(biased batch variance + eps) instead."""
    v = {b: blobs[f"{name}.{b}"].reshape(1, -1, 1, 1) for b in ("weight", "bias", "running_mean", "running_inv_std")}
    if train:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        inv_std = ((x - mean).square().mean(dim=(0, 2, 3), keepdim=True) + EPS) ** -0.5
    else:
        mean, inv_std = v["running_mean"], v["running_inv_std"]
    return (x - mean) * inv_std * v["weight"] + v["bias"]


def caffe_max_pool(x, kernel=3, stride=2, pad=0):
    """BVLC pooling_layer.cpp: pooled = ceil((H + 2 pad - kernel) / stride) + 1, windows clipped."""
    H, W = x.shape[-2:]
    Ho = int(math.ceil((H + 2 * pad - kernel) / stride)) + 1
    Wo = int(math.ceil((W + 2 * pad - kernel) / stride)) + 1
    out = torch.empty(*x.shape[:2], Ho, Wo, dtype=x.dtype)
    for i in range(Ho):
        h0, h1 = max(i * stride - pad, 0), min(i * stride - pad + kernel, H)
        for j in range(Wo):
            w0, w1 = max(j * stride - pad, 0), min(j * stride - pad + kernel, W)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].amax(dim=(-2, -1))
    return out


def caffe_interp(x, height2, width2):
    """DeepLab's caffe_cpu_interp2, which the fork's Interp layer calls: output pixel (h2, w2)
    reads the input at (h2 (H - 1) / (height2 - 1), w2 (W - 1) / (width2 - 1)), bilinearly (the
    kernel computes the ratios in float32; here in float64). Same size: a copy."""
    height1, width1 = x.shape[-2:]
    if (height1, width1) == (height2, width2):
        return x.clone()
    rheight = (height1 - 1) / (height2 - 1) if height2 > 1 else 0.0
    rwidth = (width1 - 1) / (width2 - 1) if width2 > 1 else 0.0
    out = torch.empty(*x.shape[:2], height2, width2, dtype=x.dtype)
    for h2 in range(height2):
        h1r = rheight * h2
        h1 = int(h1r)
        h1p = 1 if h1 < height1 - 1 else 0
        h1l = h1r - h1
        for w2 in range(width2):
            w1r = rwidth * w2
            w1 = int(w1r)
            w1p = 1 if w1 < width1 - 1 else 0
            w1l = w1r - w1
            out[:, :, h2, w2] = ((1 - h1l) * ((1 - w1l) * x[:, :, h1, w1] + w1l * x[:, :, h1, w1 + w1p])
                                 + h1l * ((1 - w1l) * x[:, :, h1 + h1p, w1] + w1l * x[:, :, h1 + h1p, w1 + w1p]))
    return out


def caffe_forward(layers, blobs, x, input_blob, train=False):
    """Run the layers in the prototxt's order; return the module's output blob (its last top)."""
    data = {input_blob: x}
    for kind, name, bottoms, top, param in layers:
        a = data[bottoms[0]]
        if kind == "Convolution":
            w = blobs[name + ".weight"]
            out = F.conv2d(a, w, padding=(w.shape[-1] - 1) // 2)          # pad 0 for 1x1, 1 for 3x3
        elif kind == "BN":
            out = caffe_bn(a, blobs, name, train)
        elif kind == "ReLU":
            out = a.clamp(min=0)
        elif kind == "Pooling":
            out = caffe_max_pool(a)
        elif kind == "Interp":
            out = caffe_interp(a, *data[bottoms[1]].shape[-2:])
        elif kind == "Eltwise":
            out = a + data[bottoms[1]] if param == "SUM" else a * data[bottoms[1]]
        elif kind == "Sigmoid":
            out = 1 / (1 + torch.exp(-a))
        elif kind == "TanH":
            out = torch.tanh(a)
        else:
            raise AssertionError(kind)
        data[top] = out
    return data[layers[-1][3]]


def load(module_name, blobs):
    """attn_lib.load_official (a float32 module), then the same blobs again in float64, so that the
    comparisons below are not limited by float32 rounding of the weights."""
    _, _, depth, _ = MODULES[module_name]
    m = attn_lib.load_official("residual_attention", blobs, C, depth=depth).double()
    m.load_state_dict(convert_official_state_dict(blobs), strict=True)
    return m


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("module_name", list(MODULES))
def test_caffe_layers_load_in_the_order_of_the_module(module_name):
    """Every blob finds its tensor, and the converted keys come exactly in the module's
    state_dict order, which is the Caffe layer order: a load by position pairs the same tensors
    (all units have one shape, so a different order would load silently and wrongly)."""
    layers = MODULES[module_name][0]
    blobs = random_blobs(layers)
    m = load(module_name, blobs)
    converted = convert_official_state_dict(blobs)
    assert list(converted) == list(m.state_dict())
    for key, value in converted.items():
        torch.testing.assert_close(m.state_dict()[key].double(), value.double(), rtol=0, atol=0)
    bn = "AttentionB_1/mask/linear_1/bn" if module_name == "AttentionB_1" else None
    if bn:                                                              # one BN, by hand
        torch.testing.assert_close(m.head[3].running_var, blobs[bn + ".running_inv_std"].reshape(-1) ** -2 - EPS)
        torch.testing.assert_close(m.head[3].weight, blobs[bn + ".weight"].reshape(-1))


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("module_name", list(MODULES))
def test_official_variant_is_the_caffe_forward_pass(module_name, mode):
    layers, input_blob, depth, sizes = MODULES[module_name]
    blobs = random_blobs(layers, seed=1)
    m = load(module_name, blobs).train(mode == "train")
    g = torch.Generator().manual_seed(2)
    for size in sizes:
        x = torch.randn(2, C, *size, generator=g, dtype=torch.float64)
        with torch.no_grad():
            expected = caffe_forward(layers, blobs, x, input_blob, train=mode == "train")
            got = copy.deepcopy(m)(x)
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10 * expected.abs().max().item())


def test_the_first_uploads_tanh_would_be_caught():
    """Issue 8: the official variant ended its mask in TanH, the layer of the first upload only.
    With the mask's Sigmoid read as TanH, the Caffe forward pass and the module part ways."""
    layers, input_blob, _, sizes = MODULES["AttentionB_1"]
    tanh_layers = [("TanH",) + layer[1:] if layer[0] == "Sigmoid" else layer for layer in layers]
    blobs = random_blobs(layers, seed=3)
    m = load("AttentionB_1", blobs).eval()
    x = torch.randn(2, C, *sizes[0], dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(m(x), caffe_forward(layers, blobs, x, input_blob), rtol=1e-9, atol=1e-9)
        assert not torch.allclose(m(x), caffe_forward(tanh_layers, blobs, x, input_blob), rtol=1e-3, atol=1e-3)


def test_a_state_dict_that_does_not_fit_is_refused_naming_the_layers():
    blobs = random_blobs(attention_b1())
    dropped = "AttentionB_1/mask/skip/res1/branch1/conv2_3x3.weight"
    del blobs[dropped]
    blobs["AttentionB_1/mask/not_a_layer.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        load("AttentionB_1", blobs)
    message = str(info.value)
    assert "mask/skip/res1/branch1/conv2_3x3.weight" in message, message    # relative to the module
    assert "AttentionB_1/mask/not_a_layer.weight" in message, message


def test_a_bn_blob_named_as_a_variance_is_refused():
    """The fork's fourth BN blob is an inverse standard deviation: read as a variance, every BN
    would be wrong without an error. The converter refuses the name."""
    blobs = random_blobs(attention_c1())
    key = "pre_res_3/bn.running_inv_std"
    blobs = {(k.replace("running_inv_std", "running_var") if k == key else k): v for k, v in blobs.items()}
    with pytest.raises(ValueError, match="running_inv_std"):
        load("AttentionC_1", blobs)


def attention_b2_of_92() -> list:
    """AttentionB_2 of imagenet_model/Attention-92-deploy.prototxt: AttentionB_1's layers renamed,
    its input is AttentionB_1's output (and its input BN AttentionB_1/bn)."""
    def rename(value):
        if isinstance(value, str):
            return value.replace("AttentionB_1", "AttentionB_2").replace("pre_res_2", "AttentionB_1")
        return [rename(v) for v in value] if isinstance(value, list) else value
    return [tuple(rename(v) for v in layer) for layer in attention_b1()]


def test_layers_of_another_network_position_load_too():
    """AttentionB_2 of Attention-92 takes its input from AttentionB_1/bn: the converter finds the
    module by its trunk and the input BN as the one BN layer outside it."""
    layers = attention_b2_of_92()
    blobs = random_blobs(layers, seed=4)
    assert next(iter(blobs)) == "AttentionB_1/bn.weight"
    m = attn_lib.load_official("residual_attention", blobs, C, depth=2).double().eval()
    m.load_state_dict(convert_official_state_dict(blobs))
    x = torch.randn(2, C, 8, 10, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), caffe_forward(layers, blobs, x, "AttentionB_1"), rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# Against the prototxt itself, where the mirror is present (not in CI).
# ---------------------------------------------------------------------------------------------
def _mirror() -> Path:
    root = Path(os.environ.get("ATTN_MIRROR_ROOT", Path(__file__).resolve().parents[2] / ".mirror"))
    return root / REPO / "repo"


def _git_show(rev_path: str) -> str:
    mirror = _mirror()
    if not mirror.exists():
        pytest.skip(f"no mirror of {REPO} at {mirror}")
    return subprocess.run(["git", "--git-dir", str(mirror), "show", rev_path], check=True,
                          capture_output=True, text=True).stdout


def _prototxt_layers(text: str) -> list:
    layers = []
    for block in re.findall(r"layer\s*\{(.*?)\n\}", text, re.S):
        get = lambda field: re.findall(field + r':\s*"([^"]+)"', block)
        conv = dict(re.findall(r"(num_output|pad|kernel_size|stride|bias_term):\s*(\w+)", block))
        op = re.search(r"operation:\s*(\w+)", block)
        pool = re.search(r"pool:\s*(\w+)\s+kernel_size:\s*(\d+)\s+stride:\s*(\d+)", block)
        layers.append(dict(type=get("type")[0], name=get("name")[0], bottoms=get("bottom"), top=get("top")[0],
                           conv=conv, op=op.group(1) if op else None,
                           pool=" ".join(pool.groups()) if pool else None, block=block))
    return layers


SECTIONS = [  # (prototxt, module, hand-written layers, input blob, C in the prototxt)
    (PROTOTXT, "AttentionA_1", attention_a1(), "pre_res_1", 256),
    (PROTOTXT, "AttentionB_1", attention_b1(), "pre_res_2", 512),
    (PROTOTXT, "AttentionC_1", attention_c1(), "pre_res_3", 1024),
    ("imagenet_model/Attention-92-deploy.prototxt", "AttentionB_2", attention_b2_of_92(), "AttentionB_1", 512),
]


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s[1])
def test_hand_written_layers_are_the_prototxts(section):
    path, module_name, layers, input_blob, width = section
    official = _prototxt_layers(_git_show(f"{COMMIT}:{path}"))
    start = next(i for i, layer in enumerate(official) if layer["name"] == input_blob + "/bn")
    end = next(i for i, layer in enumerate(official) if layer["name"] == module_name)     # the last Eltwise
    section_layers = official[start:end + 1]
    assert [(x["type"], x["name"], x["bottoms"], x["top"]) for x in section_layers] == \
        [(kind, name, bottoms, top) for kind, name, bottoms, top, _ in layers]
    widths = {width: C, width // 4: C // 4}
    for mine, theirs in zip(layers, section_layers):
        kind, _, _, _, param = mine
        if kind == "Convolution":
            conv = theirs["conv"]
            assert conv["bias_term"] == "false" and conv["stride"] == "1"
            assert int(conv["kernel_size"]) == param[-1] and int(conv["pad"]) == (param[-1] - 1) // 2
            assert widths[int(conv["num_output"])] == param[0]
        elif kind == "Eltwise":
            assert theirs["op"] == param
        elif kind == "Pooling":
            assert theirs["pool"] == "MAX 3 2" and "pad" not in theirs["block"]
        elif kind == "BN":
            assert "frozen: true" in theirs["block"]


def test_the_mask_was_tanh_only_in_the_first_upload():
    """The history the chapter tells: TanH in model/ at a80220a, Sigmoid from df8f62c on, and the
    files in imagenet_model/ at the pinned commit."""
    for rev, path, kind in [(FIRST_UPLOAD, "model/Attention-56-deploy.prototxt", "TanH"),
                            (SIGMOID_COMMIT, "model/Attention-56-deploy.prototxt", "Sigmoid"),
                            (COMMIT, PROTOTXT, "Sigmoid")]:
        masks = [x["type"] for x in _prototxt_layers(_git_show(f"{rev}:{path}")) if x["name"].endswith("_1/mask")]
        assert masks == [kind] * 3, (rev, masks)
