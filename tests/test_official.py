"""variant="official" computes what the official code computes, loads its state dicts, and starts
from its initialisation.

Each file in tests/fixtures/official/ was recorded from the official module itself, built from
its repository at the pinned commit (tools/official_fixtures.py names the repository, file and
class): its state dict with every tensor randomised, a seeded float64 input, the outputs in eval
and in train mode, and the state dict its constructor gives after torch.manual_seed(0). No
official code is needed here: the official outputs are data."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

import attn_lib

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "official").glob("*.pt"))


def load(path):
    return torch.load(path, weights_only=True)


def converter(name):
    return sys.modules[attn_lib.get_class(name).__module__].convert_official_state_dict


@pytest.fixture(params=FIXTURES, ids=lambda p: p.stem)
def fixture(request):
    return load(request.param)


def test_every_official_pytorch_module_has_a_fixture():
    names = {load(p)["name"] for p in FIXTURES}
    caffe_only = {"residual_attention"}       # official code is Caffe: tests/test_official_residual_attention.py
    assert set(attn_lib.available()) - names - caffe_only == set()


def test_official_state_dict_loads_and_keeps_the_official_order(fixture):
    m = attn_lib.load_official(fixture["name"], fixture["state_dict"], fixture["channels"], **fixture["kwargs"])
    converted = converter(fixture["name"])(fixture["state_dict"])
    assert list(converted) == list(m.state_dict()), (
        "the module must register its tensors in the official order, so that a load by position "
        "(zip of the two state dicts) pairs the same tensors")
    for key, value in converted.items():
        assert torch.equal(m.state_dict()[key].double(), value.double()), key


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_official_variant_reproduces_the_official_output(fixture, mode):
    m = attn_lib.load_official(fixture["name"], fixture["state_dict"], fixture["channels"], **fixture["kwargs"])
    m = copy.deepcopy(m).double().train(mode == "train")
    with torch.no_grad():
        y = m(fixture["input"].clone())
    expected = fixture[mode]
    scale = expected.abs().max().clamp(min=1.0).item()
    torch.testing.assert_close(y, expected, rtol=1e-9, atol=1e-10 * scale, msg=lambda m: f"{fixture['source']}: {m}")


def test_official_variant_initialises_as_the_official_code(fixture):
    """Constant tensors of the official initialisation (zero gammas, zero last convolutions, BatchNorm
    weights of 0 or 1) are reproduced exactly; random ones are drawn at the same scale."""
    torch.manual_seed(0)
    m = attn_lib.create(fixture["name"], fixture["channels"], variant="official", **fixture["kwargs"])
    ours = m.state_dict()
    official = converter(fixture["name"])(fixture["initial_state_dict"])
    assert list(official) == list(ours)
    for key, want in official.items():
        have = ours[key].double()
        want = want.double()
        if not want.is_floating_point() or want.numel() == 0:
            continue
        if torch.all(want == want.flatten()[0]):
            assert torch.equal(have, want), f"{key}: the official code initialises it to {want.flatten()[0].item()}"
        elif want.numel() >= 64:
            ratio = (have.std() / want.std()).item()
            assert 0.75 < ratio < 1.33, f"{key}: std {have.std():.3g}, the official init gives {want.std():.3g}"


def test_a_state_dict_that_does_not_fit_is_refused_with_official_names(fixture):
    sd = dict(fixture["state_dict"])
    if not sd:
        pytest.skip("the official module has no tensors")
    dropped = next(iter(sd))
    del sd[dropped]
    sd["not_a_layer.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        attn_lib.load_official(fixture["name"], sd, fixture["channels"], **fixture["kwargs"])
    message = str(info.value)
    assert dropped in message and "not_a_layer.weight" in message, message
