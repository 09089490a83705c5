"""binder/: what Binder installs to run the chapter notebooks, and nothing for the tests or the
book build. The versions are the lock's, torch as the CPU build from PyTorch's CPU index."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
# What the chapter notebooks import (besides the standard library and attn_lib, which Binder has
# from the cloned repository): numpy comes with matplotlib and torch, pinned so that the lock's
# version is the one the notebooks were executed with.
CHAPTER_NEEDS = {"torch", "einops", "matplotlib", "numpy"}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert m, f"binder/requirements.txt: not an exact pin: {line!r}"
        pins[_norm(m.group(1))] = m.group(2)
    return pins


def _options(text: str) -> list[str]:
    return [l.split("#", 1)[0].strip() for l in text.splitlines() if l.strip().startswith("-")]


def test_binder_lists_only_what_the_chapters_need():
    pins = _pins((BINDER / "requirements.txt").read_text())
    assert set(pins) == CHAPTER_NEEDS, f"binder/requirements.txt lists {sorted(pins)}"
    # nothing for the tests or the book build
    for name in ("pytest", "nbval", "jupyter-book", "sphinx", "jupytext", "onnx", "onnxruntime",
                 "timm", "nbclient", "playwright", "otter-grader"):
        assert name not in pins
    # repo2docker reads binder/ only; no other environment file in it may take over
    assert sorted(p.name for p in BINDER.iterdir()) == ["requirements.txt", "runtime.txt"]
    assert re.fullmatch(r"python-3\.1[0-9]", (BINDER / "runtime.txt").read_text().strip())


def test_binder_pins_the_lock_and_the_cpu_build_of_torch():
    text = (BINDER / "requirements.txt").read_text()
    pins = _pins(text)
    lock = _pins("\n".join(l for l in (ROOT / "requirements/lock.txt").read_text().splitlines()
                           if "==" in l))
    for name in CHAPTER_NEEDS:
        assert pins[name].split("+")[0] == lock[name], (name, pins[name], lock[name])
    # torch: the CPU wheel (local version +cpu), found on PyTorch's CPU index; the other packages
    # still come from PyPI, so the CPU index is an extra index, not the only one.
    assert pins["torch"] == lock["torch"] + "+cpu"
    assert _options(text) == [f"--extra-index-url {CPU_INDEX}"]


def test_reading_chapter_setup_agrees_with_the_readme():
    """The Reading chapter's set-up text and the README give the same pinned torch (the lock's,
    the CPU build) and the same command for a CUDA build of it."""
    lock = _pins("\n".join(l for l in (ROOT / "requirements/lock.txt").read_text().splitlines()
                           if "==" in l))
    readme = (ROOT / "README.md").read_text()
    reading = (ROOT / "book/src/reading.md").read_text()
    reading = reading[reading.index("## Running the chapters"):]
    pinned = f"torch=={lock['torch']}"
    for text in (readme, reading):
        assert f"**CPU build** `{pinned}`" in text
    # the local tag (+cu128) makes pip replace the installed 2.13.0+cpu; without it pip keeps it
    cuda = re.search(r'`(\.venv/bin/pip install "torch==(\S+)\+(cu\d+)" --index-url '
                     r'https://download\.pytorch\.org/whl/(cu\d+))`', readme)
    assert cuda, "README: no CUDA install command of the form pip install \"torch==X+cuNNN\" --index-url .../cuNNN"
    assert cuda.group(2) == lock["torch"] and cuda.group(3) == cuda.group(4), cuda.group(1)
    assert cuda.group(1) in reading, f"the Reading chapter does not give {cuda.group(1)!r}"
    assert "binder/requirements.txt" in reading
