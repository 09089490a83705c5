"""scSE, variant="official": the constructor draws exactly the official initial tensors.

The official ChannelSpatialSELayer (ai-med/squeeze_and_excitation@acdd26e,
squeeze_and_excitation/squeeze_and_excitation.py) keeps PyTorch's default initialisation of
cSE.fc1, cSE.fc2 (nn.Linear) and sSE.conv (1x1 nn.Conv2d); registered in the same order, our
w_1, w_2, w_sq draw the same tensors under the same seed."""

from pathlib import Path

import torch

import attn_lib
from attn_lib.scse import convert_official_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "official"


def test_official_initialisation_is_bit_identical():
    fixture = torch.load(FIXTURES / "scse.pt", weights_only=True)
    torch.manual_seed(0)
    m = attn_lib.create(fixture["name"], fixture["channels"], variant="official", **fixture["kwargs"])
    official = convert_official_state_dict(fixture["initial_state_dict"])
    ours = m.state_dict()
    assert list(official) == list(ours)
    for key, value in official.items():
        assert torch.equal(ours[key].to(value.dtype), value), key


def test_a_block_inside_a_network_checkpoint_converts_by_its_prefix():
    """The converter renames official keys after any prefix, so a whole network's keys convert."""
    fixture = torch.load(FIXTURES / "scse.pt", weights_only=True)
    prefix = "decode.2.scse."
    network = {prefix + k: v for k, v in fixture["state_dict"].items()}
    converted = convert_official_state_dict(network)
    m = attn_lib.create("scse", fixture["channels"], variant="official", **fixture["kwargs"])
    assert [k[len(prefix):] for k in converted] == list(m.state_dict())
