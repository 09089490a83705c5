"""Shared helpers for the tests: build any registered module at a given input size, and give
its parameters and buffers random values so that no check passes because a weight is zero."""

from __future__ import annotations

import inspect

import pytest
import torch

import attn_lib


def build(name: str, channels: int, height: int, width: int, **kwargs) -> torch.nn.Module:
    """attn_lib.create(name, channels, **kwargs); modules built for one map size (those whose
    constructor takes `spatial_size`) are built for (height, width)."""
    cls = attn_lib.get_class(name)
    if "spatial_size" in inspect.signature(cls.__init__).parameters:
        kwargs.setdefault("spatial_size", (height, width))
    return attn_lib.create(name, channels, **kwargs)


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> torch.nn.Module:
    """Fill every parameter and float buffer with seeded random values (BatchNorm variances
    positive), so that zero-initialised parts (gammas, last convolutions) take part."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
        for name, b in module.named_buffers():
            if not b.is_floating_point():
                continue
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g, dtype=b.dtype) + 0.5)
            else:
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * scale)
    return module


def variants_of(name: str) -> tuple[str, ...]:
    return tuple(getattr(attn_lib.get_class(name), "VARIANTS", ("paper",)))


ALL_CASES = [(name, variant) for name in attn_lib.available() for variant in variants_of(name)]


@pytest.fixture(autouse=True)
def seeded():
    """Every test draws its inputs from the same seed: a failure reproduces."""
    torch.manual_seed(0)


@pytest.fixture(params=ALL_CASES, ids=[f"{n}-{v}" for n, v in ALL_CASES])
def case(request):
    return request.param
