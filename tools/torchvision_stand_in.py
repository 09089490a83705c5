"""A stand-in for torchvision, for importing timm where torchvision cannot be imported.

timm imports torchvision for its data pipeline (transforms, datasets) when it is imported, and
PyPI's torchvision wheels are CUDA builds whose operators fail to load with the CPU build of
torch (and whose latest release pulls a CUDA torch), so requirements/lock.txt installs timm
without it. timm's models and layers never call torchvision; with the stand-in in place
`import timm` works. Used by tests/test_timm.py, tools/bench.py and tools/official_fixtures.py.
"""

from __future__ import annotations

import importlib.util
import sys
import types


class _Meta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return f"{cls.__name__}.{name}"          # enum members such as InterpolationMode.BILINEAR


class _Module(types.ModuleType):
    """Any attribute: a class for CamelCase names (so timm can subclass transforms), else a module."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = (_Meta(name, (), {"__init__": lambda self, *a, **k: None}) if name[:1].isupper()
                 else _Module(f"{self.__name__}.{name}"))
        setattr(self, name, value)
        return value


class _Finder:
    """Serves torchvision and every torchvision.* submodule as a stand-in."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname != "torchvision" and not fullname.startswith("torchvision."):
            return None
        return importlib.util.spec_from_loader(fullname, _Finder, is_package=True)

    @staticmethod
    def create_module(spec):
        module = _Module(spec.name)
        module.__path__ = []
        return module

    @staticmethod
    def exec_module(module):
        pass


def install_if_broken() -> bool:
    """Put the stand-in in place unless the real torchvision imports; True if it did."""
    if _Finder in sys.meta_path:
        return True
    try:
        import torchvision  # noqa: F401
        return False
    except Exception:       # missing, or a build whose operators do not load with this torch
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.meta_path.insert(0, _Finder)
        return True
