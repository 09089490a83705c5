"""attn_lib's classes work as timm's attn_layer without an adapter, and attn_lib.models places
them where timm does (timm 1.0.31 models/resnet.py: `self.se = create_attn(attn_layer,
outplanes, device=..., dtype=...)` after bn3, before the addition).

timm imports torchvision for its data pipeline, and PyPI's torchvision wheels are CUDA builds that
fail to import with the CPU torch; the lock installs timm without torchvision, and this file
puts a stand-in torchvision in sys.modules when the real one is missing or broken (timm's
ResNet itself never calls torchvision)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch

import attn_lib
from attn_lib import models


def _stand_in():
    spec = importlib.util.spec_from_file_location(
        "torchvision_stand_in", Path(__file__).resolve().parent.parent / "tools" / "torchvision_stand_in.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _import_timm():
    if importlib.util.find_spec("timm") is None:
        pytest.skip("timm is not installed (it is in requirements/lock.txt and the test extra)",
                    allow_module_level=True)
    _stand_in().install_if_broken()
    import timm
    return timm


timm = _import_timm()

# the names that go where timm puts attn_layer (after the last BN of each block)
AFTER_BN3 = sorted(n for n, p in models.PLACEMENT.items() if p.resnet == "after_bn3")


@pytest.mark.parametrize("name", AFTER_BN3)
def test_class_is_timms_attn_layer_and_matches_attn_lib_models(name):
    cls = attn_lib.get_class(name)
    with torch.device("meta"):
        theirs = timm.create_model("resnet50", pretrained=False, block_args=dict(attn_layer=cls))
        ours = models.resnet50(attention=name)
    shapes = lambda m: [(k.replace(".se.", ".attention."), tuple(v.shape)) for k, v in m.state_dict().items()]
    assert shapes(theirs) == shapes(ours)


def test_keywords_through_functools_partial_and_a_forward_pass():
    torch.manual_seed(0)
    layer = functools.partial(attn_lib.CBAM, variant="official", reduction=8)
    net = timm.create_model("resnet18", pretrained=False, block_args=dict(attn_layer=layer)).eval()
    assert isinstance(net.layer1[0].se, attn_lib.CBAM) and net.layer1[0].se.reduction == 8
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_timm_passes_device_and_dtype_to_the_layer():
    with torch.device("meta"):
        net = timm.create_model("resnet18", pretrained=False, block_args=dict(attn_layer=attn_lib.SE),
                                dtype=torch.float64)
    assert {p.dtype for p in net.layer1[0].se.parameters()} == {torch.float64}


def test_plain_resnet50_has_timms_and_torchvisions_keys():
    with torch.device("meta"):
        theirs = timm.create_model("resnet50", pretrained=False)
        ours = models.resnet50()
    assert list(theirs.state_dict()) == list(ours.state_dict())
