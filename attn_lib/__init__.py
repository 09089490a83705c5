"""attn_lib: channel and spatial attention modules for CNNs, exported from the chapters
of the book *Attention, Derived*.

    >>> import attn_lib
    >>> block = attn_lib.create("cbam", 64)  # the channel count always comes first
    >>> block = attn_lib.create("cbam", 64, variant="official")
    >>> attn_lib.available()                 # every registered name

    >>> from attn_lib import CBAM, models    # every class, by name
    >>> attn_lib.__version__

Every module file except this one, ``models.py`` and ``_version.py`` is generated from a
chapter (``book/src/<chapter>.md``) and is self-contained: it imports only torch, einops
and the standard library, so a single file can be copied into another project. Each file
ends with a ``REGISTRY`` dict that maps the names it provides to its classes; this
package collects them and imports every registered class by name.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Mapping

import torch
from torch import nn

from ._version import __version__ as __version__

# Every registered class, imported by name so that type checkers and IDEs see
# ``from attn_lib import SE``. ``_discover`` below checks that this list equals what the
# module files register (tests/test_release.py fails when a chapter adds a class that is
# not here).
from .bam import BAM as BAM
from .cbam import CBAM as CBAM
from .coord_attention import CoordAttention as CoordAttention
from .csra import CSRA as CSRA
from .danet import ChannelAttention as ChannelAttention
from .danet import DANetHead as DANetHead
from .danet import DualAttention as DualAttention
from .danet import PositionAttention as PositionAttention
from .gc_block import GCBlock as GCBlock
from .lka import LKA as LKA
from .lka import VANAttention as VANAttention
from .psa import PSAParallel as PSAParallel
from .psa import PSASequential as PSASequential
from .residual_attention import ResidualAttention as ResidualAttention
from .rga import RGA as RGA
from .rga import RGAChannel as RGAChannel
from .rga import RGASpatial as RGASpatial
from .scconv import SCBottleneck as SCBottleneck
from .scconv import SCConv as SCConv
from .scse import SCSE as SCSE
from .se import SE as SE
from .simam import SimAM as SimAM
from .strip_pooling import MixedPooling as MixedPooling
from .strip_pooling import StripPooling as StripPooling
from .triplet import TripletAttention as TripletAttention

_CLASSES: tuple[type[nn.Module], ...] = (
    BAM, CBAM, CoordAttention, CSRA, ChannelAttention, DANetHead, DualAttention,
    PositionAttention, GCBlock, LKA, VANAttention,
    PSAParallel, PSASequential, ResidualAttention, RGA, RGAChannel, RGASpatial,
    SCBottleneck, SCConv, SCSE, SE, SimAM, MixedPooling, StripPooling, TripletAttention,
)

# A literal list, as type checkers read it.
__all__ = [
    "__version__", "available", "create", "get_class", "load_official", "models",
    "BAM", "CBAM", "CoordAttention", "CSRA", "ChannelAttention", "DANetHead",
    "DualAttention", "PositionAttention", "GCBlock", "LKA",
    "VANAttention", "PSAParallel", "PSASequential", "ResidualAttention", "RGA",
    "RGAChannel", "RGASpatial",
    "SCBottleneck", "SCConv", "SCSE", "SE", "SimAM", "MixedPooling", "StripPooling",
    "TripletAttention",
]

_REGISTRY: dict[str, type[nn.Module]] = {}


def _discover() -> list[type[nn.Module]]:
    """Collect the ``REGISTRY`` dicts of every module file into ``_REGISTRY``; return
    the registered classes that this file does not import by name (``[]`` when the
    explicit list is complete; the release tests assert it, and list the missing
    ``from .x import X as X``)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.ispkg or info.name == "models":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, cls in getattr(module, "REGISTRY", {}).items():
            if name in _REGISTRY and _REGISTRY[name] is not cls:
                raise RuntimeError(f"attn_lib: two modules register the name {name!r}")
            _REGISTRY[name] = cls
    return [cls for cls in dict.fromkeys(_REGISTRY.values()) if cls not in _CLASSES]


def available() -> list[str]:
    """The names ``create`` accepts, sorted."""
    return sorted(_REGISTRY)


def get_class(name: str) -> type[nn.Module]:
    """The class registered under ``name``."""
    if not isinstance(name, str):
        raise TypeError(f"attn_lib: the module name must be a str, got "
                        f"{type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"attn_lib: no module named {name!r}; available: "
                         f"{', '.join(available())}") from None


def create(name: str, channels: int, **kwargs) -> nn.Module:
    """Build the attention module registered as ``name`` for inputs with ``channels``
    channels.

    Keyword arguments go to the module's constructor; every module takes
    ``variant="paper"`` (the default: the paper's formulas) or ``variant="official"``
    (exactly what the official code computes), where the two differ.
    """
    cls = get_class(name)
    if isinstance(channels, bool) or not isinstance(channels, int):
        raise TypeError(f"attn_lib.create({name!r}): channels must be an int, got "
                        f"{type(channels).__name__}")
    if channels < 1:
        raise ValueError(f"attn_lib.create({name!r}): channels must be positive, got "
                         f"{channels}")
    return cls(channels, **kwargs)


def _official_name(source, key: str, given=()) -> str:
    """This module's key written with the official code's names (for error messages).
    Where several official layouts map to the same key, the one the given state dict
    uses wins. A class may hold its own ``_OFFICIAL_PREFIXES`` where its file holds two
    official layouts."""
    pairs = tuple(getattr(source, "_OFFICIAL_PREFIXES", ()))
    used = tuple(p for p in pairs
                 if any(k.startswith(p[0]) or ("." + p[0]) in k for k in given))
    for official, ours in used + pairs:
        if key.startswith(ours):
            return official + key[len(ours):]
    return key


def load_official(name: str, state_dict: Mapping[str, torch.Tensor], channels: int,
                  **kwargs) -> nn.Module:
    """Build ``create(name, channels, variant="official", **kwargs)`` and load a state
    dict saved from the official code into it.

    The module file's ``convert_official_state_dict`` maps the official key names and
    layouts to the module's; the load is strict. When keys are missing, left over or of
    another shape, a ``ValueError`` lists them with the official code's names, so the
    message can be checked against the official checkpoint.
    """
    if "variant" in kwargs:
        raise TypeError("attn_lib.load_official builds variant='official'; "
                        "do not pass variant")
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"attn_lib.load_official({name!r}): state_dict must be a "
                        f"mapping of names to tensors, got {type(state_dict).__name__}")
    module = create(name, channels, variant="official", **kwargs)
    source = sys.modules[type(module).__module__]
    convert = getattr(source, "convert_official_state_dict", None)
    if convert is None:
        raise ValueError(f"attn_lib.load_official({name!r}): {source.__name__} has no "
                         "convert_official_state_dict")
    converted = convert(dict(state_dict))
    given = (dict(zip(converted, state_dict)) if len(converted) == len(state_dict)
             else {})
    ours = module.state_dict()
    names = type(module) if "_OFFICIAL_PREFIXES" in vars(type(module)) else source
    missing = [_official_name(names, k, state_dict) for k in ours if k not in converted]
    unexpected = [given.get(k, k) for k in converted if k not in ours]
    wrong = [f"{given.get(k, k)}: got {tuple(v.shape)}, expected {tuple(ours[k].shape)}"
             for k, v in converted.items()
             if k in ours and tuple(v.shape) != tuple(ours[k].shape)]
    if missing or unexpected or wrong:
        lines = [f"attn_lib.load_official({name!r}, channels={channels}): the state "
                 f"dict does not fit {type(module).__name__}(variant='official') built "
                 f"with {kwargs or 'the defaults'}"]
        if missing:
            lines.append("missing keys (official names): " + ", ".join(missing))
        if unexpected:
            lines.append("unexpected keys: " + ", ".join(unexpected))
        if wrong:
            lines.append("keys of another shape: " + "; ".join(wrong))
        raise ValueError("\n".join(lines))
    module.load_state_dict(converted, strict=True)
    return module


_UNEXPORTED = _discover()

# last: the networks look the registry up when they are built
from . import models  # noqa: E402
