"""The training experiment of the chapter "Attention in a network" (book/src/networks.md).

The chapter loads its results from book/data/networks_training.json when the record's hash
matches the experiment's code. Checked here:

- (fast) the record's hash equals the hash of the chapter's current experiment code, so a record
  left stale by an edit to the chapter (or to an attention class it trains) fails `make check`;
- (slow) the whole grid, re-run from the chapter's code, reproduces the record run by run.

The experiment code is the chapter's code cells whose first line starts with
"# experiment code"; they are executed here in a fresh namespace, as the notebook executes them.

Regenerate the record:  python tests/test_networks_experiment.py --write   (make networks-record)
"""

from __future__ import annotations

import json
import linecache
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "book" / "src" / "networks.md"
RECORD = ROOT / "book" / "data" / "networks_training.json"
MARKER = "# experiment code"


def experiment_namespace() -> dict:
    """The chapter's experiment cells, executed in order in one namespace. Each cell is compiled
    under its own file name and registered in linecache, so that inspect.getsource (which the
    hash uses) finds the same text as in the notebook's kernel."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    cells = [c.source for c in jupytext.read(CHAPTER).cells
             if c.cell_type == "code" and c.source.startswith(MARKER)]
    assert len(cells) == 3, f"expected 3 experiment cells in {CHAPTER.name}, found {len(cells)}"
    namespace: dict = {"__name__": "networks_experiment"}
    for i, source in enumerate(cells):
        filename = f"<{CHAPTER.name} experiment cell {i}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), namespace)
    return namespace


def load_record() -> dict:
    assert RECORD.is_file(), f"{RECORD.relative_to(ROOT)} is missing: run `make networks-record`"
    return json.loads(RECORD.read_text())


def test_record_is_current():
    ns = experiment_namespace()
    record = load_record()
    assert record["hash"] == ns["experiment_hash"](), (
        "book/data/networks_training.json was recorded for other experiment code (the chapter or an "
        "attention class it trains changed): run `make networks-record`")
    assert record["config"] == json.loads(json.dumps(ns["EXPERIMENT"]))
    cfg = ns["EXPERIMENT"]
    expected = [(t, m, s) for t, modules in cfg["tasks"].items() for m in modules for s in cfg["seeds"]]
    assert [(r["task"], r["attention"], r["seed"]) for r in record["runs"]] == expected


def test_record_supports_the_chapters_argument():
    """What the prose relies on, read from the record: the plain network is at chance on the far
    task and solves the near one."""
    runs = load_record()["runs"]
    final = lambda task, m: [r["val_acc"][-1] for r in runs if r["task"] == task and r["attention"] == m]
    assert max(final("far", "none")) < 0.6
    assert min(final("near", "none")) > 0.95


@pytest.mark.slow
def test_grid_reproduces_the_record():
    ns = experiment_namespace()
    record = load_record()
    rerun = ns["run_grid"]()
    assert rerun["hash"] == record["hash"]
    differ = [(a["task"], a["attention"], a["seed"], a["val_acc"][-1], b["val_acc"][-1])
              for a, b in zip(record["runs"], rerun["runs"]) if not ns["same_run"](a, b)]
    assert len(record["runs"]) == len(rerun["runs"]) and not differ, \
        f"runs not reproduced within {ns['TOLERANCE']} (task, module, seed, recorded, re-run): {differ}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_networks_experiment.py --write   (re-runs the grid, minutes)")
    ns = experiment_namespace()
    record = ns["run_grid"]()
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {RECORD.relative_to(ROOT)}: {len(record['runs'])} runs, hash {record['hash'][:12]}")
