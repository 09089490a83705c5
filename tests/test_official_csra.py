"""CSRA, variant="official": official checkpoints load, the constructor draws the official
initial tensors, and (where the mirror and the harness are present) every official head setting
computes what Kevinz-code/CSRA@c8480d1 pipeline/csra.py computes.

The recorded fixtures (tests/fixtures/official/csra.pt: MHA with 4 heads; csra_single.pt: one
CSRA) need no official code; the direct comparison needs the git mirror of the repository under
ATTN_MIRROR_ROOT and the official-code harness ATTN_HARNESS names (neither is part of this
repository, see tests/test_official.py), and is skipped without them."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

import attn_lib
from attn_lib.checks.csra import csra_official_forward
from attn_lib.csra import CSRA, convert_official_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "official"
HARNESS = Path(os.environ.get("ATTN_HARNESS", "harness-not-configured"))


def fixture(name):
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


@pytest.mark.parametrize("name", ["csra", "csra_single"])
def test_official_initialisation_is_bit_identical(name):
    """The official heads keep nn.Conv2d's default initialisation; ours are created in the same
    order, so the same seed draws the same tensors."""
    data = fixture(name)
    torch.manual_seed(0)
    m = attn_lib.create(data["name"], data["channels"], variant="official", **data["kwargs"])
    official = convert_official_state_dict(data["initial_state_dict"])
    assert list(official) == list(m.state_dict())
    for key, value in official.items():
        assert torch.equal(m.state_dict()[key].to(value.dtype), value), key


@pytest.mark.parametrize("name", ["csra", "csra_single"])
def test_a_resnet_csra_checkpoint_converts_by_its_prefix(name):
    """ResNet_CSRA keeps the MHA under `classifier.`: the converter keeps the prefix, and the
    keys after it are the module's (a single official CSRA's head.weight is renamed to
    multi_head.0.head.weight behind the prefix), with the tensors unchanged."""
    data = fixture(name)
    prefix = "classifier."
    original = {prefix + k: v for k, v in data["state_dict"].items()}
    converted = convert_official_state_dict(original)
    m = attn_lib.create("csra", data["channels"], variant="official", **data["kwargs"])
    assert [k[len(prefix):] for k in converted] == list(m.state_dict())
    assert all(k.startswith(prefix) for k in converted)
    if name == "csra_single":
        assert prefix + "head.weight" in original and prefix + "multi_head.0.head.weight" in converted
    for (_, before), (_, after) in zip(original.items(), converted.items(), strict=True):
        assert torch.equal(before, after)


def test_the_transcription_of_the_official_forward_matches_the_recording():
    """The chapter's transcription of the official forward (attn_lib.checks.csra) reproduces
    the recorded official output, so the chapter may compare with it."""
    data = fixture("csra")
    temperatures = CSRA.OFFICIAL_TEMPERATURES[data["kwargs"]["num_heads"]]
    y = csra_official_forward(data["state_dict"], data["input"], temperatures, data["kwargs"]["lam"])
    torch.testing.assert_close(y, data["eval"], rtol=1e-12, atol=1e-12)


def _harness():
    if not HARNESS.is_file() or not os.environ.get("ATTN_MIRROR_ROOT"):
        pytest.skip("needs ATTN_HARNESS and ATTN_MIRROR_ROOT (the official code's mirror)")
    spec = importlib.util.spec_from_file_location("official_harness", HARNESS)
    harness = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("official_harness", harness)
    spec.loader.exec_module(harness)
    try:
        harness.git_dir("Kevinz-code/CSRA")
    except harness.MirrorMissing as err:
        pytest.skip(str(err))
    return harness


@pytest.mark.parametrize("num_heads", [1, 2, 4, 6, 8])
@pytest.mark.parametrize("lam", [0.1, 0.5])
def test_every_official_head_setting_matches_the_official_code(num_heads, lam):
    harness = _harness()
    official = harness.load_official("csra_mha", num_heads=num_heads, lam=lam, input_dim=16,
                                     num_classes=7).double()
    harness.randomize_(official, seed=num_heads)
    ours = attn_lib.load_official("csra", official.state_dict(), 16, num_classes=7,
                                  num_heads=num_heads, lam=lam).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 7, 9, generator=g, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), official(x), rtol=1e-12, atol=1e-12)
