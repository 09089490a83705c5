"""PSA, variant="official": the constructor draws exactly the official initial tensors.

tests/test_official.py checks the scale of the official initialisation (the std of each random
tensor); the official PSA_p / PSA_s (DeLightCMU/PSA@20e307a, semantic-segmentation/network/PSA.py)
draw PyTorch's default init for every layer and then kaiming_normal_(mode='fan_in',
nonlinearity='relu') for conv_q_right, conv_v_right, conv_q_left, conv_v_left. Registering the
layers in the official order and re-drawing the four projections in that order reproduces the
official tensors bit for bit under the same seed."""

from pathlib import Path

import pytest
import torch

import attn_lib
from attn_lib.psa import convert_official_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "official"


@pytest.mark.parametrize("entry", ["psa_parallel", "psa_sequential"])
def test_official_initialisation_is_bit_identical(entry):
    fixture = torch.load(FIXTURES / f"{entry}.pt", weights_only=True)
    torch.manual_seed(0)
    m = attn_lib.create(fixture["name"], fixture["channels"], variant="official", **fixture["kwargs"])
    official = convert_official_state_dict(fixture["initial_state_dict"])
    ours = m.state_dict()
    assert list(official) == list(ours)
    for key, value in official.items():
        assert torch.equal(ours[key].to(value.dtype), value), key
