"""attn_lib: channel and spatial attention modules for CNNs, exported from the chapters of the
book *Attention, Derived*.

    >>> import attn_lib
    >>> block = attn_lib.create("cbam", 64)            # the channel count always comes first
    >>> block = attn_lib.create("cbam", 64, variant="official")
    >>> attn_lib.available()                           # every registered name

Every module file except this one is generated from a chapter (``book/src/<chapter>.md``) and
is self-contained: it imports only torch, einops and the standard library, so a single file can
be copied into another project. Each file ends with a ``REGISTRY`` dict that maps the names it
provides to its classes; this package collects them.
"""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

__all__ = ["available", "create", "get_class"]

_REGISTRY: dict[str, type[nn.Module]] = {}


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.ispkg:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, cls in getattr(module, "REGISTRY", {}).items():
            if name in _REGISTRY and _REGISTRY[name] is not cls:
                raise RuntimeError(f"attn_lib: two modules register the name {name!r}")
            _REGISTRY[name] = cls
            globals()[cls.__name__] = cls


def available() -> list[str]:
    """The names ``create`` accepts, sorted."""
    return sorted(_REGISTRY)


def get_class(name: str) -> type[nn.Module]:
    """The class registered under ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"attn_lib: the module name must be a str, got {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"attn_lib: no module named {name!r}; available: {', '.join(available())}") from None


def create(name: str, channels: int, **kwargs) -> nn.Module:
    """Build the attention module registered as ``name`` for inputs with ``channels`` channels.

    Keyword arguments go to the module's constructor; every module takes
    ``variant="paper"`` (the default: the paper's formulas) or ``variant="official"`` (exactly
    what the official code computes), where the two differ.
    """
    cls = get_class(name)
    if isinstance(channels, bool) or not isinstance(channels, int):
        raise TypeError(f"attn_lib.create({name!r}): channels must be an int, got {type(channels).__name__}")
    if channels < 1:
        raise ValueError(f"attn_lib.create({name!r}): channels must be positive, got {channels}")
    return cls(channels, **kwargs)


_discover()
