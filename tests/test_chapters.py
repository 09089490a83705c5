"""Rules every chapter source keeps, so that its notebook runs alone in a fresh Colab runtime,
reproduces under nbval on any machine, and renders as a chapter of the book."""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "book" / "src").glob("*.md"))
IMPORTS_ATTN_LIB = re.compile(r"^\s*(from|import)\s+attn_lib\b", re.MULTILINE)
TIMING = ("benchmark", "Timer", "perf_counter")


def code_cells(path):
    return [c for c in jupytext.read(path).cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_first_cell_sets_up_a_fresh_runtime(path):
    first = code_cells(path)[0].source
    assert 'find_spec("einops")' in first, "the first cell installs einops when it is missing"
    assert "torch.manual_seed(0)" in first and "torch.cuda.is_available()" in first
    assert "allow_tf32 = False" in first


def uses_library(path) -> bool:
    return bool(jupytext.read(path).metadata.get("attn_lib", {}).get("uses_library"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_no_code_cell_needs_attn_lib(path):
    """attn_lib cannot be installed in a fresh Colab runtime: a chapter defines what it uses.
    Only the pages about the library in use (front matter `attn_lib: {uses_library: true}`)
    import it, and their set-up cell says what to do where it is missing."""
    offenders = [c.source.splitlines()[0] for c in code_cells(path) if IMPORTS_ATTN_LIB.search(c.source)]
    if uses_library(path):
        first = code_cells(path)[0].source
        assert 'find_spec("attn_lib")' in first and "ImportError" in first, \
            "a page that uses attn_lib makes it importable from a clone, or says how, in its first cell"
        assert not jupytext.read(path).metadata["attn_lib"].get("module"), "a library page exports nothing"
    else:
        assert not offenders, f"cells importing attn_lib: {offenders}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_only_timing_cells_skip_output_comparison(path):
    for cell in code_cells(path):
        if "nbval-ignore-output" in cell.metadata.get("tags", []):
            assert any(word in cell.source for word in TIMING), cell.source.splitlines()[0]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_chapter_is_in_the_table_of_contents_and_cites_from_the_bib(path):
    toc = (ROOT / "_toc.yml").read_text()
    assert f"file: book/{path.stem}\n" in toc
    text = path.read_text()
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "book" / "references.bib").read_text(), re.MULTILINE))
    cited = {k.strip() for group in re.findall(r"\{cite[pt]?\}`([^`]+)`", text) for k in group.split(",")}
    assert cited, "a chapter cites its paper"
    assert cited <= keys, f"keys missing from book/references.bib: {cited - keys}"
    assert "```{bibliography}" in text


def test_toc_parses_and_lists_every_chapter_once():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    assert sorted(files) == sorted(f"book/{p.stem}" for p in SOURCES)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_exercises_are_sphinx_exercise_directives_with_their_own_solutions(path):
    """Every exercise is a labelled {exercise} whose solution is its own {solution} (or a
    {solution-start}/{solution-end} pair), a dropdown hidden by default; no numbered list of
    exercises with one cell of all the solutions."""
    text = path.read_text()
    if "## Exercises" not in text:
        return
    section = text[text.index("## Exercises"):]
    section = section[:section.index("## References")] if "## References" in section else section
    assert not re.search(r"^\d+\. \*\*", section, re.MULTILINE), "exercises as a numbered list"
    assert "# Solution" not in section and "hide-cell" not in section, "a cell of solutions"
    labels = re.findall(r"^```\{exercise\}.*\n:label: (\S+)", section, re.MULTILINE)
    assert labels, "the Exercises section has {exercise} directives with a :label:"
    assert len(labels) == section.count("```{exercise}"), "every exercise has a :label:"
    assert all(label.startswith(f"{path.stem}-ex-") for label in labels), labels
    for label in labels:
        whole = section.count(f"```{{solution}} {label}\n")
        started = section.count(f"```{{solution-start}} {label}\n")
        assert whole + started == 1, f"{label} has exactly one solution ({whole + started})"
    assert section.count("```{solution-start}") == section.count("```{solution-end}")
    solutions = re.findall(r"^```\{solution(?:-start)?\} \S+\n((?::\w+:.*\n)*)", section, re.MULTILINE)
    assert all(":class: dropdown" in options for options in solutions), "every solution is a dropdown"
