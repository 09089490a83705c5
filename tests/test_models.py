"""attn_lib.models: the networks count exactly what the papers print, run, export, and refuse
what they cannot build (the VAN, SCNet and Attention-56 networks: tests/test_models_blocks.py)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import attn_lib
from attn_lib import models

STAGES = {"resnet50": [(256, 3), (512, 4), (1024, 6), (2048, 3)],
          "resnet101": [(256, 3), (512, 4), (1024, 23), (2048, 3)],
          "resnet18": [(64, 2), (128, 2), (256, 2), (512, 2)]}


@pytest.fixture
def meta():
    """Build on the meta device: structure only, no memory, no initialisation time."""
    with torch.device("meta"):
        yield


def count(network: str, attention=None, **kwargs) -> int:
    with torch.device("meta"):
        net = models.create(network, attention=attention, **kwargs)
    return sum(p.numel() for p in net.parameters())


# (network, attention, keywords, the figure the paper's table prints in millions, its digits)
PRINTED = [
    ("resnet50", None, {}, "25.56"),
    ("resnet50", "se", {"variant": "official"}, "28.09"),          # biased FC, as the SE release
    ("resnet50", "se", {}, "28.07"),                               # eq. (3): no biases
    ("resnet50", "cbam", {"variant": "official"}, "28.09"),
    ("resnet50", "bam", {}, "25.92"),
    ("resnet50", "bam", {"variant": "official"}, "25.92"),
    ("resnet50", "triplet", {}, "25.56"),
    ("resnet50", "gc", {"variant": "official"}, "28.11"),
    ("resnet50", "simam", {}, "25.56"),
    ("resnet18", "cbam", {"variant": "official"}, "11.78"),
    ("resnet101", "se", {"variant": "official"}, "49.33"),
    ("mobilenet_v2", None, {}, "3.50"),
    ("mobilenet_v2", "coord_attention", {"variant": "official"}, "3.95"),
]


@pytest.mark.parametrize("network, attention, kwargs, printed", PRINTED,
                         ids=[f"{n}-{a}-{k.get('variant', 'paper')}" for n, a, k, _ in PRINTED])
def test_parameter_count_reproduces_the_printed_figure(network, attention, kwargs, printed):
    digits = len(printed.split(".")[1])
    assert f"{count(network, attention, **kwargs) / 1e6:.{digits}f}" == printed


def test_torchvision_counts_of_the_plain_networks():
    # torchvision's documented parameter counts of these architectures
    expected = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                "resnet101": 44_549_160, "resnext50_32x4d": 25_028_904, "mobilenet_v2": 3_504_872}
    assert {n: count(n) for n in expected} == expected


@pytest.mark.parametrize("network", ["resnet50", "resnet101"])
def test_se_adds_c2_over_8_plus_17c_over_16_per_block(network):
    """W_1 (C/16 x C, bias C/16) and W_2 (C x C/16, bias C) after the last BN of every block."""
    added = sum(blocks * (c * c // 8 + 17 * c // 16) for c, blocks in STAGES[network])
    assert count(network, "se", variant="official") - count(network) == added
    assert count(network, "se") - count(network) == sum(b * c * c // 8 for c, b in STAGES[network])


def test_cbam_gc_and_triplet_add_their_per_block_parameters():
    base = count("resnet50")
    blocks = STAGES["resnet50"]
    # CBAM: SE's MLP with biases, then a 7x7 convolution of 2 maps to 1 and its BN (weight, bias)
    assert count("resnet50", "cbam", variant="official") - base == \
        sum(b * (c * c // 8 + 17 * c // 16 + 2 * 49 + 2) for c, b in blocks)
    # GC: W_k (C + 1), then W_v1 (C^2/16 + C/16), LayerNorm (2 C/16), W_v2 (C^2/16 + C)
    assert count("resnet50", "gc", variant="official") - base == \
        sum(b * (c + 1 + c * c // 8 + c // 16 + 2 * c // 16 + c) for c, b in blocks)
    # Triplet: three branches, each a 7x7 convolution of 2 maps to 1 and its BN
    per_block = count("resnet50", "triplet") - base
    assert per_block % 16 == 0 and per_block // 16 == sum(
        p.numel() for p in attn_lib.create("triplet", 64).parameters())


def test_simam_is_parameter_free_in_every_network():
    for network in ("resnet18", "resnet50", "mobilenet_v2"):
        assert count(network, "simam") == count(network)


def macs(network: str, attention=None, size=224, **kwargs) -> float:
    with torch.device("meta"):
        net = models.create(network, attention=attention, **kwargs).eval()
        with FlopCounterMode(display=False) as counter:
            net(torch.empty(1, 3, size, size))
    return counter.get_total_flops() / 2


@pytest.mark.parametrize("attention, kwargs, printed", [
    (None, {}, "3.858"), ("se", {"variant": "official"}, "3.860"), ("cbam", {"variant": "official"}, "3.864")])
def test_cbam_papers_gflops_column_with_the_v1_layout(attention, kwargs, printed):
    assert f"{macs('resnet50', attention, layout='v1', **kwargs) / 1e9:.3f}" == printed


def test_the_v1_5_layout_moves_the_stride_to_the_3x3_and_costs_more():
    v1, v15 = macs("resnet50", layout="v1"), macs("resnet50")
    assert f"{v15 / 1e9:.2f}" == "4.09" and v15 > v1
    assert count("resnet50", layout="v1") == count("resnet50")


PLACEABLE_RESNET = sorted(n for n, p in models.PLACEMENT.items() if p.resnet)
PLACEABLE_MOBILENET = sorted(n for n, p in models.PLACEMENT.items() if p.mobilenet_v2)


def small_kwargs(name, size):
    return {"image_size": size} if name.startswith("rga") else {}


@pytest.mark.parametrize("name", PLACEABLE_RESNET)
def test_resnet18_with_each_placeable_attention_runs_on_a_small_image(name):
    torch.manual_seed(0)
    net = models.resnet18(attention=name, **small_kwargs(name, 64)).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 1000) and torch.isfinite(y).all()
    assert sum(p.numel() for p in net.parameters()) >= count("resnet18")


@pytest.mark.parametrize("name", PLACEABLE_MOBILENET)
def test_mobilenet_v2_with_each_placeable_attention_runs_on_a_small_image(name):
    torch.manual_seed(0)
    net = models.mobilenet_v2(attention=name).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 3, 64, 64))
    assert y.shape == (1, 1000) and torch.isfinite(y).all()


@pytest.mark.parametrize("name, kwargs", [("resnet18", {"attention": "cbam"}), ("mobilenet_v2", {})])
def test_output_at_224(name, kwargs):
    net = models.create(name, **kwargs).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_every_position_holds_its_module_where_the_paper_puts_it(meta):
    net = models.resnet50(attention="simam")
    block = net.layer2[0]
    assert block.position == "after_conv2" and isinstance(block.attention, attn_lib.SimAM)
    net = models.resnet50(attention="bam")
    assert [hasattr(net, f"attention{i}") for i in range(1, 5)] == [True, True, True, False]
    assert [net.attention1.channels, net.attention2.channels, net.attention3.channels] == [256, 512, 1024]
    net = models.resnet50(attention="strip_pooling")      # SPNet: last block of stages 1-3, all of 4
    spm = [[b.attention is not None for b in getattr(net, f"layer{i}")] for i in range(1, 5)]
    assert spm == [[False, False, True], [False] * 3 + [True], [False] * 5 + [True], [True] * 3]
    net = models.mobilenet_v2(attention="coord_attention")  # CA: blocks with expansion only
    assert net.features[1].attention is None and all(f.attention is not None for f in net.features[2:18])
    assert net.features[2].attention.channels == 96          # the expanded width, after the depthwise
    net = models.mobilenet_v2(attention="triplet")
    assert all(f.attention is not None for f in net.features[1:18])


def test_attention_keeps_its_own_initialisation():
    torch.manual_seed(0)
    net = models.resnet50(attention="gc", variant="official")
    last = net.layer1[0].attention.transform[-1]
    assert torch.count_nonzero(last.weight) == 0, "GCNet initialises its last convolution to zero"
    first = net.layer1[0].attention.w_k.weight
    assert first.std() < 0.5 * (2 / 1) ** 0.5, "not torchvision's Kaiming fan_out init of the backbone"


def test_keywords_reach_the_attention_module(meta):
    net = models.resnet50(attention="cbam", variant="official", reduction=8)
    assert net.layer1[0].attention.variant == "official" and net.layer1[0].attention.reduction == 8


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a = models.resnet18(attention="cbam").eval()
    torch.manual_seed(1)
    b = models.resnet18(attention="cbam").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_torch_export_matches_eager():
    torch.manual_seed(0)
    net = models.resnet18(attention="se").eval()
    x = torch.randn(2, 3, 64, 64)
    exported = torch.export.export(net, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), net(x))


@pytest.mark.slow
def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    net = models.resnet18(attention="cbam").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(net, fullgraph=True)(x), net(x), rtol=1e-4, atol=1e-4)


def test_rga_is_built_for_the_image_size_and_refuses_others():
    with pytest.raises(ValueError, match="image_size"):
        models.resnet50(attention="rga_spatial")
    with torch.device("meta"):
        net = models.resnet50(attention="rga_spatial", image_size=224)
    assert [getattr(net, f"attention{i}").spatial_size for i in range(1, 5)] == [(56, 56), (28, 28), (14, 14), (7, 7)]
    net = models.resnet18(attention="rga_channel", image_size=(64, 32)).eval()
    with pytest.raises(ValueError, match="64x32 images"):
        net(torch.randn(1, 3, 64, 64))


def test_unknown_attention_lists_the_choices():
    with pytest.raises(ValueError, match="choices: bam, cbam, coord_attention"):
        models.resnet50(attention="eca")
    with pytest.raises(ValueError, match="no network named 'resnet51'"):
        models.create("resnet51")


@pytest.mark.parametrize("name", sorted(n for n, p in models.PLACEMENT.items() if not p.resnet))
def test_attention_that_cannot_go_in_a_resnet_says_why_and_what_to_use(name):
    with pytest.raises(ValueError, match=r"cannot go in this network .*; use "):
        models.resnet50(attention=name)


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(TypeError, match="without attention="):
        models.resnet50(reduction=8)
    with pytest.raises(TypeError, match="resnet50: se does not take"):
        models.resnet50(attention="se", kernel_size=3)
    with pytest.raises(ValueError, match="layout must be"):
        models.resnet50(layout="v2")
    with pytest.raises(ValueError, match="placement= one of"):
        models.resnet50(attention=attn_lib.SE)
    with pytest.raises(TypeError, match="registry name, an nn.Module class or None"):
        models.resnet50(attention=3)
    net = models.resnet18().eval()
    with pytest.raises(ValueError, match=r"resnet18 expects images of shape \(B, 3, H, W\)"):
        net(torch.randn(1, 1, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        net(torch.zeros(1, 3, 32, 32, dtype=torch.long))


def test_an_attention_class_goes_where_placement_says():
    net = models.resnet18(attention=attn_lib.SE, placement="after_bn3", reduction=4)
    assert isinstance(net.layer1[0].attention, attn_lib.SE) and net.layer1[0].attention.reduction == 4


def test_placement_names_every_registered_module():
    assert sorted(models.PLACEMENT) == attn_lib.available()


def test_readme_table_says_what_placement_says():
    from pathlib import Path
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`") and cells[0].strip("`") in models.PLACEMENT:
            rows[cells[0].strip("`")] = cells
    assert sorted(rows) == sorted(models.PLACEMENT)
    for name, (_, gates, drop_in, resnet, mobilenet) in rows.items():
        p = models.PLACEMENT[name]
        assert gates == p.gates and drop_in == ("yes" if p.drop_in else "no"), name
        assert resnet.startswith(f"`{p.resnet}`" if p.resnet else "no: "), name
        assert mobilenet.startswith(f"`{p.mobilenet_v2}`" if p.mobilenet_v2 else "no"), name
