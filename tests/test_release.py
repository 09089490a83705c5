"""attn_lib as a release: the sdist and the wheel that `python -m build` makes (offline:
``--no-isolation``, with the setuptools of requirements/lock.txt), `twine check --strict` on
both, what the wheel holds, one version everywhere, the licences, and every registered class
imported by name in ``attn_lib/__init__.py`` (so that type checkers and IDEs see
``from attn_lib import SE``)."""

from __future__ import annotations

import ast
import email
import email.policy
import hashlib
import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

import attn_lib
from attn_lib import models

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "attn_lib"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# sha256 of the MIT permission notice (from "Permission is hereby granted" to the end) and of
# the CC BY-SA 4.0 legal code in LICENSE-CONTENT (after its header), as copied from
# licensedcode-data 32.1.0: an edit to either text fails here.
MIT_BODY_SHA256 = "10d5120a16805804ffda8b688c220bfb4e8f39741b57320604d455a309e01972"
CC_BY_SA_SHA256 = "405e857a501b372cf3e9b7b224ea85868e95f7822790b1a38f4b9c26c8808413"
CC_SEPARATOR = "\n" + "-" * 71 + "\n\n"


def _module_files() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    for tool in ("build", "twine", "setuptools"):
        if importlib.util.find_spec(tool) is None:
            pytest.fail(f"{tool} is not installed: it is in requirements/lock.txt (run `make venv`)")
    out = tmp_path_factory.mktemp("dist")
    # Build from a copy of the working tree's files (tracked and not ignored): the build writes
    # egg-info and build/ into its source folder, and under pytest-xdist two workers may build at once.
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split("\n")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    run = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"python -m build failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(name), policy=email.policy.compat32)


def test_twine_check_passes(dist):
    run = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(dist["sdist"]), str(dist["wheel"])],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("PASSED") == 2, run.stdout


def test_wheel_holds_the_package_and_nothing_else(dist):
    with zipfile.ZipFile(dist["wheel"]) as z:
        names = set(z.namelist())
        licence = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        assert z.read(licence) == (ROOT / "LICENSE").read_bytes()
    assert "attn_lib/py.typed" in names
    assert {n for n in names if n.endswith(".py")} == _module_files()
    outside = sorted(n for n in names if not n.startswith("attn_lib/") and ".dist-info/" not in n)
    assert outside == [], f"files outside the package in the wheel: {outside}"
    assert not [n for n in names if n.startswith(("tests/", "book/", "tools/")) or "/tests/" in n]


def test_sdist_holds_what_the_wheel_is_built_from(dist):
    with tarfile.open(dist["sdist"]) as t:
        top = t.getnames()[0].split("/")[0]
        names = {n[len(top) + 1:] for n in t.getnames() if "/" in n}
    for needed in ("pyproject.toml", "LICENSE", "PKG-INFO", "attn_lib/py.typed", *_module_files()):
        assert needed in names, f"{needed} is not in the sdist"
    assert not [n for n in names if n.startswith("book/")], "the book is not part of the sdist"


def test_one_version_everywhere(dist):
    tree = ast.parse((LIBRARY / "_version.py").read_text())
    written = [ast.literal_eval(n.value) for n in tree.body
               if isinstance(n, ast.Assign) and [t.id for t in n.targets] == ["__version__"]]
    assert written == [attn_lib.__version__]
    assert re.fullmatch(r"\d+\.\d+\.\d+", attn_lib.__version__)
    # pyproject reads it from there and writes no version of its own
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "attn_lib._version.__version__"}
    assert _metadata(dist["wheel"])["Version"] == attn_lib.__version__
    assert dist["wheel"].name.startswith(f"attn_lib-{attn_lib.__version__}-")
    assert dist["sdist"].name == f"attn_lib-{attn_lib.__version__}.tar.gz"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(attn_lib.__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M), \
        f"CHANGELOG.md has no entry for {attn_lib.__version__}"


def test_metadata(dist):
    meta = _metadata(dist["wheel"])
    assert meta["Name"] == "attn-lib"
    assert meta["License-Expression"] == "MIT" and meta.get_all("License-File") == ["LICENSE"]
    assert "Typing :: Typed" in meta.get_all("Classifier")
    runtime = sorted(r.split(">")[0].split("=")[0].strip() for r in meta.get_all("Requires-Dist") if "extra ==" not in r)
    assert runtime == ["einops", "torch"]
    # one repository URL: the one the book's configuration holds
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["Repository"] == urls["Homepage"] == repo
    assert urls["Issues"] == f"{repo}/issues"
    assert all(u.startswith(repo) for k, u in urls.items() if k != "Documentation")
    # the description is about the library, not the book's build
    body = meta.get_payload()
    assert meta["Description-Content-Type"].startswith("text/markdown")
    assert "import attn_lib" in body and "load_official" in body
    assert "make book" not in body and "jupyter-book" not in body.lower() and ".venv" not in body
    assert "book" not in meta["Summary"].lower()


def test_licences():
    mit = (ROOT / "LICENSE").read_text()
    assert mit.startswith("MIT License\n\nCopyright (c) 2026 The Attention, Derived authors\n\nPermission is hereby granted")
    body = mit[mit.index("Permission is hereby granted"):]
    assert hashlib.sha256(body.encode()).hexdigest() == MIT_BODY_SHA256
    content = (ROOT / "LICENSE-CONTENT").read_text()
    header, legal = content.split(CC_SEPARATOR, 1)
    assert "CC-BY-SA-4.0" in header and "licensedcode-data 32.1.0" in header and "MIT" in header
    assert legal.startswith("Attribution-ShareAlike 4.0 International\n")
    assert hashlib.sha256(legal.encode()).hexdigest() == CC_BY_SA_SHA256
    assert PYPROJECT["project"]["license"] == "MIT" and PYPROJECT["project"]["license-files"] == ["LICENSE"]


def test_book_footer_names_both_licences():
    footer = yaml.safe_load((ROOT / "_config.yml").read_text())["html"]["extra_footer"]
    assert "MIT" in footer and "CC BY-SA 4.0" in footer
    assert "https://creativecommons.org/licenses/by-sa/4.0/" in footer


# --- every class importable in a way type checkers see --------------------------------------

def _init_tree() -> ast.Module:
    return ast.parse((LIBRARY / "__init__.py").read_text())


def test_every_registered_class_is_imported_by_name():
    imported = {(node.module, a.name) for node in _init_tree().body if isinstance(node, ast.ImportFrom)
                and node.level == 1 for a in node.names if a.asname == a.name}
    registered = set(attn_lib._REGISTRY.values())
    missing = sorted(f"from .{c.__module__.rsplit('.', 1)[1]} import {c.__name__} as {c.__name__}"
                     for c in registered if (c.__module__.rsplit(".", 1)[1], c.__name__) not in imported)
    assert missing == [], "attn_lib/__init__.py does not import: " + "; ".join(missing)
    assert attn_lib._UNEXPORTED == []
    assert len(registered) == 25      # 21 + DANetHead, DualAttention, RGA + CSRA
    assert set(attn_lib._CLASSES) == registered and len(attn_lib._CLASSES) == len(registered)
    assert ("", "models") in {(n.module or "", a.name) for n in _init_tree().body
                              if isinstance(n, ast.ImportFrom) and n.level == 1 for a in n.names}


def test_all_is_a_literal_list_of_every_public_name():
    literal = [ast.literal_eval(n.value) for n in _init_tree().body
               if isinstance(n, ast.Assign) and [getattr(t, "id", None) for t in n.targets] == ["__all__"]]
    assert len(literal) == 1 and literal[0] == attn_lib.__all__, "__all__ must be one literal list"
    names = set(attn_lib.__all__)
    assert len(names) == len(attn_lib.__all__)
    assert {c.__name__ for c in attn_lib._REGISTRY.values()} | {"__version__", "models", "create", "available",
                                                                 "get_class", "load_official"} == names
    for name in names:
        assert hasattr(attn_lib, name), name
    namespace: dict = {}
    exec("from attn_lib import *", namespace)
    assert namespace["SE"] is attn_lib.get_class("se") and namespace["CBAM"] is attn_lib.get_class("cbam")


def test_discover_reports_a_class_that_init_does_not_import(tmp_path, monkeypatch):
    """A chapter that exports a new class: the check names it until __init__ imports it."""
    (tmp_path / "zz_new_chapter.py").write_text(
        "from torch import nn\n\nclass NewGate(nn.Module):\n    pass\n\nREGISTRY = {'zz_new_gate': NewGate}\n")
    monkeypatch.setattr(attn_lib, "__path__", [*attn_lib.__path__, str(tmp_path)])
    monkeypatch.setattr(attn_lib, "_REGISTRY", dict(attn_lib._REGISTRY))
    monkeypatch.delitem(sys.modules, "attn_lib.zz_new_chapter", raising=False)
    try:
        unexported = attn_lib._discover()
    finally:
        sys.modules.pop("attn_lib.zz_new_chapter", None)
    assert [c.__name__ for c in unexported] == ["NewGate"]


def test_models_all_lists_every_public_name():
    public = {n for n, o in vars(models).items() if not n.startswith("_")
              and (inspect.isclass(o) or inspect.isfunction(o)) and o.__module__ == models.__name__}
    assert set(models.__all__) == public | {"PLACEMENT"}
    assert len(set(models.__all__)) == len(models.__all__)
    assert set(models.available()) <= set(models.__all__)


def test_the_package_description_code_runs():
    """The example on the package's PyPI page is run as written."""
    text = PYPROJECT["project"]["readme"]["text"]
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "the description has no python example"
    for code in blocks:
        namespace: dict = {}
        exec(compile(code, "pyproject.toml:project.readme", "exec"), namespace)
    assert tuple(namespace["y"].shape) == (2, 64, 28, 28)
