"""The networks built from whole-block modules: VAN-B0..B3 (van_attention), SCNet-50/101
(sc_bottleneck) and Attention-56/92 (residual_attention), in attn_lib.models.

Checked here: the exact parameter counts and the papers' printed figures (built on the meta
device), outputs of shape (B, 1000) at 224 x 224 and at small sizes, keyword checking,
state_dict round trips, and, against the official code, the state_dict keys, shapes and order
(VAN: Visual-Attention-Network/VAN-Classification models/van.py at e19779b; SCNet:
MCG-NKU/SCNet scnet.py at c0b5bd6) and the outputs of the official networks for seeded weights
and inputs (variant="official"). The official side is recorded in tests/fixtures/models/ by

    .venv/bin/python tests/test_models_blocks.py --write-fixtures

which needs git mirrors of the official repositories (the folder ATTN_MIRROR_ROOT names) and
an official-code harness (the file ATTN_HARNESS names; neither is part of this repository,
see tests/test_official.py); CI needs neither. Where the mirrors are
present, the tests also compare with the official code directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attn_lib import models

FIXTURES = Path(__file__).parent / "fixtures" / "models"
MIRROR_ROOT = Path(os.environ.get("ATTN_MIRROR_ROOT", "mirrors-not-configured"))
HARNESS = Path(os.environ.get("ATTN_HARNESS", "harness-not-configured"))

# network: (exact parameter count at num_classes=1000, the printed figure, where it is printed)
COUNTS = {
    "van_b0": (4_105_800, "4.1", "VAN paper"),
    "van_b1": (13_861_800, "13.9", "VAN paper"),
    "van_b2": (26_578_472, "26.6", "VAN paper"),
    "van_b3": (44_765_608, "44.8", "VAN paper"),
    "scnet50": (25_564_584, "25.56", "SCNet paper and official README"),
    "scnet101": (44_565_416, "44.57", "official README (paper unverified)"),
    "attention56": (31_810_728, "31.8", "the Caffe deploy file's learned blobs (the paper: 31.9, see below)"),
    "attention92": (52_466_344, "52.5", "the Caffe deploy file's learned blobs (51.3 quoted for the paper)"),
}
SMALLEST = ("van_b0", "scnet50", "attention56")
# a small input every network accepts in both variants and in train mode (batch 2): 32 x 32
# gives 1 x 1 maps at stage 4 (VAN, SCNet) and at the coarsest level of every mask (Attention)
SMALL = dict.fromkeys(COUNTS, 32)
OFFICIAL = {"van_b0": "van_b0", "van_b1": "van_b1", "van_b2": "van_b2", "van_b3": "van_b3",
            "scnet50": "scnet50", "scnet101": "scnet101"}
# seeded official outputs: case -> (batch, side, num_classes). "scnet_2111" is SCNet with
# (2, 1, 1, 1) blocks per stage (official: SCNet(SCBottleneck, [2, 1, 1, 1])): every kind of
# block SCNet-50 has, at 10.1M instead of 25.6M parameters; 100 x 100 is the smallest input
# whose stage-4 map (4 x 4) the official AvgPool2d(4) accepts.
OUTPUT_CASES = {"van_b0": (2, 32, 10), "scnet_2111": (2, 100, 10)}


def ours_for_case(case: str, variant: str, num_classes: int) -> torch.nn.Module:
    if case == "scnet_2111":
        return models.SCNet((2, 1, 1, 1), name="scnet_2111", variant=variant, num_classes=num_classes)
    return models.create(case, variant=variant, num_classes=num_classes)


_BUILT: dict = {}


def built(name: str, variant: str = "paper") -> torch.nn.Module:
    """The network on the CPU, built once per test session (seed 0); tests must not change its
    parameters (train-mode passes change only BatchNorm statistics)."""
    if (name, variant) not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name, variant] = models.create(name, variant=variant)
    return _BUILT[name, variant]


def on_meta(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return models.create(name, **kwargs)


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def key_list(net: torch.nn.Module) -> list:
    return [[k, list(v.shape)] for k, v in net.state_dict().items()]


def key_digest(keys: list) -> str:
    return hashlib.sha256("\n".join(f"{k}:{tuple(s)}" for k, s in keys).encode()).hexdigest()


@torch.no_grad()
def fill_(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Seeded values for every float tensor of the state dict, in its key order, by name and
    shape only (so two networks with the same keys get the same values): weights of rank >= 2
    N(0, 1 / fan_in), norm weights 1 + N(0, 0.1^2), layer scales 0.5 + N(0, 0.1^2), biases and
    running means N(0, 0.1^2), running variances U(0.5, 1.5)."""
    g = torch.Generator().manual_seed(seed)
    for key, t in net.state_dict().items():
        if not t.is_floating_point():
            continue
        shape, kind = t.shape, t.dtype
        if key.endswith("running_var"):
            value = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
        elif t.dim() >= 2:
            fan_in = t[0].numel()
            value = torch.randn(shape, generator=g, dtype=torch.float64) / fan_in ** 0.5
        elif "layer_scale" in key:
            value = 0.5 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        elif key.endswith("weight"):
            value = 1 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        else:
            value = 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)
        t.copy_(value.to(kind))
    return net


def seeded_input(batch: int, side: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, side, side, generator=g, dtype=torch.float64)


def load_fixture(name: str) -> dict:
    path = FIXTURES / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `.venv/bin/python tests/test_models_blocks.py --write-fixtures`")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------- counts

@pytest.mark.parametrize("name, variant", [(n, "paper") for n in COUNTS] + [(n, "official") for n in SMALLEST])
def test_parameter_count_is_exact_and_prints_as_the_source(name, variant):
    exact, printed, _ = COUNTS[name]
    n = n_params(on_meta(name, variant=variant))
    assert n == exact
    digits = len(printed.split(".")[1])
    assert f"{n / 1e6:.{digits}f}" == printed
    assert f"{exact:,}" in getattr(models, name).__doc__                  # the docstring states it


def test_attention56_printed_count_needs_the_bn_statistics():
    """The paper's 31.9M is reached when the BatchNorm statistics (blobs of the authors' Caffe BN
    layer) are counted; the learned parameters alone give 31.8M."""
    net = on_meta("attention56")
    stats = sum(b.numel() for k, b in net.named_buffers() if k.endswith(("running_mean", "running_var")))
    assert stats == 72_704
    assert f"{(n_params(net) + stats) / 1e6:.1f}" == "31.9"
    assert f"{n_params(net) / 1e6:.1f}" == "31.8"


def test_registered_and_created_by_name():
    for name in COUNTS:
        assert name in models.available()
    assert isinstance(on_meta("scnet50"), models.SCNet)


# ---------------------------------------------------------------------------- outputs

@pytest.mark.parametrize("name", SMALLEST)
def test_output_at_224(name):
    net = built(name).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 3, 224, 224))
    assert y.shape == (1, 1000) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", SMALLEST)
@pytest.mark.parametrize("variant", ["paper", "official"])
def test_small_input_trains_and_evaluates(name, variant):
    net = built(name, variant)
    x = torch.randn(2, 3, SMALL[name], SMALL[name])
    y = net.train()(x)
    assert y.shape == (2, 1000)
    y.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=True)
    with torch.no_grad():
        assert net.eval()(x[:1]).shape == (1, 1000)


@pytest.mark.parametrize("name", [n for n in COUNTS if n not in SMALLEST])
def test_larger_networks_at_a_small_size_on_meta(name):
    net = on_meta(name).eval()
    with torch.device("meta"):
        assert net(torch.empty(2, 3, SMALL[name], SMALL[name])).shape == (2, 1000)


def test_non_square_and_odd_sizes():
    for name, size in (("van_b0", (37, 53)), ("scnet50", (33, 47)), ("attention56", (45, 61))):
        with torch.no_grad():
            assert built(name).eval()(torch.randn(1, 3, *size)).shape == (1, 1000)


@pytest.mark.parametrize("name", SMALLEST)
def test_state_dict_round_trip(name):
    a = built(name, "official").eval()
    torch.manual_seed(1)
    b = models.create(name, variant="official").eval()
    x = torch.randn(2, 3, SMALL[name], SMALL[name])
    with torch.no_grad():
        before = b(x)
        b.load_state_dict(a.state_dict())
        after, reference = b(x), a(x)
    assert torch.equal(after, reference) and not torch.allclose(before, after)   # another seed: another network
    assert list(a.state_dict()) == list(b.state_dict())


# ---------------------------------------------------------------------------- variants, keywords

def test_van_variants_differ_only_by_the_shortcut():
    """Same weights: "official" adds x inside each attention block, "paper" does not."""
    official = built("van_b0", "official").eval()
    paper = models.van_b0().eval()
    paper.load_state_dict(official.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(paper(x), official(x))
        for p, o in zip(paper.block1, official.block1):
            assert not p.attn.shortcut and o.attn.shortcut
            f = torch.randn(1, 32, 5, 5)
            torch.testing.assert_close(o.attn(f), p.attn(f) + f)


def test_attention_keywords_reach_every_module():
    sc = on_meta("scnet50", pooling_r=2)
    blocks = [m for m in sc.modules() if type(m).__name__ == "SCBottleneck"]
    assert len(blocks) == 16 and all(b.pooling_r == 2 and b.variant == "paper" for b in blocks)
    ra = on_meta("attention56", attention="spatial", variant="paper")
    mods = [m for m in ra.modules() if type(m).__name__ == "ResidualAttention"]
    assert [m.depth for m in mods] == [3, 2, 1] and all(m.attention == "spatial" for m in mods)
    assert [m.depth for m in on_meta("attention92").modules() if type(m).__name__ == "ResidualAttention"] \
        == [3, 2, 2, 1, 1, 1]
    van = on_meta("van_b1", variant="official", kernel_size=9, dilation=2)
    lkas = [m for m in van.modules() if type(m).__name__ == "LKA"]
    assert len(lkas) == 10 and all(m.kernel_size == 9 and m.dilation == 2 for m in lkas)


@pytest.mark.parametrize("name, bad", [("van_b0", {"reduction": 16}), ("scnet50", {"stride": 2}),
                                       ("scnet101", {"out_channels": 64}), ("attention56", {"depth": 2}),
                                       ("attention92", {"colour": "red"})])
def test_bad_keywords_name_the_network(name, bad):
    with pytest.raises(TypeError, match=rf"attn_lib\.models\.{name}"):
        on_meta(name, **bad)


def test_bad_variant_and_bad_input():
    with pytest.raises(ValueError, match="variant"):
        on_meta("van_b0", variant="v2")
    with pytest.raises(ValueError, match="official"):          # the official blocks are mixed attention only
        on_meta("attention56", variant="official", attention="channel")
    net = on_meta("scnet50")
    with torch.device("meta"), pytest.raises(ValueError, match=r"scnet50 expects images of shape \(B, 3, H, W\)"):
        net(torch.empty(1, 4, 64, 64))
    with pytest.raises(TypeError, match="van_b0 expects a floating-point"):
        models.van_b0().eval()(torch.zeros(1, 3, 32, 32, dtype=torch.long))


def test_device_and_dtype_are_the_factory_keywords():
    for name in SMALLEST:
        net = models.create(name, device="meta", dtype=torch.float64)
        assert {(t.device.type, t.dtype) for t in net.parameters()} == {("meta", torch.float64)}
    with torch.device("meta"):                                # the last one runs in float64
        assert net.eval()(torch.empty(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64


def test_official_pools_refuse_maps_too_small_for_caffe():
    with torch.no_grad():
        with pytest.raises(ValueError, match="Caffe max pools"):
            built("attention56", "official").eval()(torch.randn(1, 3, 24, 24))   # stage 1: 6 -> 3 -> 2 -> 1
        assert built("attention56").eval()(torch.randn(1, 3, 24, 24)).shape == (1, 1000)


# ---------------------------------------------------------------------------- official code

def test_keys_equal_the_official_networks():
    """Keys, shapes and order of the official state dicts, recorded from the official code."""
    recorded = load_fixture("official_keys.json")
    for name in OFFICIAL:
        ours = key_list(on_meta(name, variant="official"))
        assert len(ours) == recorded[name]["n_keys"], name
        assert key_digest(ours) == recorded[name]["sha256"], name
        if "keys" in recorded[name]:
            assert ours == recorded[name]["keys"], name


@pytest.mark.parametrize("name", list(OUTPUT_CASES))
def test_official_variant_computes_the_official_outputs(name):
    """Same seeded weights (by key) and input: our variant="official" gives the official logits
    (recorded in float64), in eval mode (running statistics) and in train mode (batch
    statistics). VAN runs in float32 here (PyTorch's float64 depth-wise convolutions take a path
    about 100 times slower on the CPU): agreement to 1e-4 rather than 1e-9."""
    recorded = load_fixture("official_outputs.json")[name]
    batch, side, classes = OUTPUT_CASES[name]
    dtype, tol = (torch.float32, 1e-4) if name.startswith("van") else (torch.float64, 1e-9)
    net = fill_(ours_for_case(name, "official", classes).to(dtype))
    x = seeded_input(batch, side).to(dtype)
    with torch.no_grad():
        for mode in ("eval", "train"):
            y = net.train(mode == "train")(x)
            torch.testing.assert_close(y, torch.tensor(recorded[mode], dtype=dtype), rtol=tol, atol=tol)


def _official_functions():
    """The official network constructors, imported from the mirrors by the shared harness."""
    if not HARNESS.exists():
        pytest.skip(f"no official-code harness at {HARNESS}")
    sys.path.insert(0, str(HARNESS.parent))
    import official_harness as harness                        # noqa: E402

    real_have = harness._have
    harness._have = lambda mod: False if mod in ("timm", "mmcv") else real_have(mod)   # use its stubs
    try:
        van = sys.modules[harness.official_class("van_attention").__module__]
        scnet = sys.modules[harness.official_class("scbottleneck").__module__]
    except harness.MirrorMissing as error:
        pytest.skip(str(error))
    return {"van_b0": van.van_b0, "van_b1": van.van_b1, "van_b2": van.van_b2, "van_b3": van.van_b3,
            "scnet50": scnet.scnet50, "scnet101": scnet.scnet101,
            "scnet_2111": lambda **kw: scnet.SCNet(scnet.SCBottleneck, [2, 1, 1, 1], **kw)}, harness


def _mirror(name: str) -> Path:
    base = MIRROR_ROOT / name / "repo"
    return base / ".git" if (base / ".git").is_dir() else base


def test_against_the_official_code_where_the_mirrors_are():
    """Live: the official VAN-B0 and SCNet-50 have our keys, shapes and order, and our official
    variant loads their state dicts strictly (the outputs are compared in the fixture test)."""
    if not all(_mirror(m).exists() for m in ("Visual-Attention-Network+VAN-Classification", "MCG-NKU+SCNet")):
        pytest.skip("official mirrors absent (CI has none): the recorded fixtures cover this")
    functions, _ = _official_functions()
    for name in ("van_b0", "scnet50"):
        official = functions[name]()
        assert key_list(official) == key_list(built(name, "official"))
        models.create(name, variant="official").load_state_dict(official.state_dict(), strict=True)


def _caffe_learned_blobs(prototxt: str) -> int:
    """Learned values of a Caffe deploy file: convolutions (no bias here), the BN layers' slope
    and bias, the classifier (with bias); channel counts followed through the graph."""
    channels, total = {"data": 3}, 0
    for body in re.findall(r"layer\s*\{(.*?)\n\}", prototxt, flags=re.S):
        kind = re.search(r'type:\s*"(\w+)"', body).group(1)
        bottoms = re.findall(r'bottom:\s*"([^"]+)"', body)
        top = re.search(r'top:\s*"([^"]+)"', body).group(1)
        c_in = channels.get(bottoms[0]) if bottoms else None
        if kind in ("Convolution", "InnerProduct"):
            n = int(re.search(r"num_output:\s*(\d+)", body).group(1))
            k = int(re.search(r"kernel_size:\s*(\d+)", body).group(1)) if kind == "Convolution" else 1
            bias = "bias_term: false" not in body
            total += n * c_in * k * k + (n if bias else 0)
            channels[top] = n
        elif kind == "BN":
            total += 2 * c_in
            channels[top] = c_in
        elif kind == "Eltwise":
            channels[top] = channels[bottoms[0]]
        else:
            channels[top] = c_in
    return total


@pytest.mark.parametrize("name, deploy", [("attention56", "Attention-56-deploy.prototxt"),
                                          ("attention92", "Attention-92-deploy.prototxt")])
def test_residual_attention_counts_equal_the_caffe_deploy_files(name, deploy):
    git = _mirror("fwang91+residual-attention-network")
    if not git.exists():
        pytest.skip("mirror of fwang91/residual-attention-network absent (CI has none)")
    text = subprocess.run(["git", f"--git-dir={git}", "show", f"bc207a8:imagenet_model/{deploy}"],
                          capture_output=True, text=True, check=True).stdout
    assert _caffe_learned_blobs(text) == COUNTS[name][0] == n_params(on_meta(name))


# ---------------------------------------------------------------------------- fixture writer

def write_fixtures() -> None:
    """Record the official networks' keys and seeded outputs in tests/fixtures/models/."""
    functions, harness = _official_functions()
    FIXTURES.mkdir(parents=True, exist_ok=True)
    keys = {}
    for name, build in functions.items():
        if name not in OFFICIAL:
            continue
        listed = key_list(build())
        keys[name] = {"source": _SOURCES[name], "n_keys": len(listed), "sha256": key_digest(listed)}
        if name in ("van_b0", "scnet50"):
            keys[name]["keys"] = listed
    outputs = {}
    for name, (batch, side, classes) in OUTPUT_CASES.items():
        net = fill_(functions[name](num_classes=classes).double())
        x = seeded_input(batch, side)
        with torch.no_grad():
            outputs[name] = {"source": _SOURCES[name], "input": [batch, 3, side, side], "num_classes": classes,
                             "eval": net.eval()(x).tolist(), "train": net.train()(x).tolist()}
    lines = []                                                # one key per line: readable diffs
    for name, entry in keys.items():
        head = {k: v for k, v in entry.items() if k != "keys"}
        body = json.dumps(head)[:-1]
        if "keys" in entry:
            body += ', "keys": [\n' + ",\n".join(json.dumps(k) for k in entry["keys"]) + "\n]"
        lines.append(json.dumps(name) + ": " + body + "}")
    (FIXTURES / "official_keys.json").write_text("{\n" + ",\n".join(lines) + "\n}\n")
    (FIXTURES / "official_outputs.json").write_text(json.dumps(outputs, indent=1) + "\n")
    print("wrote", *(p.name for p in FIXTURES.iterdir()))


_SOURCES = {**{f"van_b{i}": f"Visual-Attention-Network/VAN-Classification@e19779b53a1b0828b51ecb4412d577541aee83a7 "
                           f"models/van.py van_b{i}()" for i in range(4)},
            "scnet50": "MCG-NKU/SCNet@c0b5bd6aa919c00afb5815b2810e645e6a4a5976 scnet.py scnet50()",
            "scnet101": "MCG-NKU/SCNet@c0b5bd6aa919c00afb5815b2810e645e6a4a5976 scnet.py scnet101()",
            "scnet_2111": "MCG-NKU/SCNet@c0b5bd6aa919c00afb5815b2810e645e6a4a5976 scnet.py "
                          "SCNet(SCBottleneck, [2, 1, 1, 1])"}


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-fixtures"]:
        sys.exit("usage: python tests/test_models_blocks.py --write-fixtures")
    write_fixtures()
