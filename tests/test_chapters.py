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
    generated = ["book/notation"]           # written by tools/glossary.py from the chapters
    assert sorted(files) == sorted([f"book/{p.stem}" for p in SOURCES] + generated)


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


# ------------------------------------------------------------------ figures, links and summaries
PAPER_CHAPTERS = [p for p in SOURCES if jupytext.read(p).metadata.get("attn_lib", {}).get("module")]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
COLUMN_PX = 688      # the article's text column at a 1280-px window (measured in chromium)
HEAT_MAP = re.compile(r"\.(imshow|matshow|pcolormesh)\(")
DOC_LINK = re.compile(r"\{doc\}`(?:[^`<]*<)?([\w/.-]+)>?`")
# Where the ideas of two chapters meet, each links the other (issue 11's list).
LINKED = [("bam", "cbam"), ("danet", "gc"), ("gc", "se"), ("psa", "gc"), ("rga", "danet"),
          ("coord_attention", "se"), ("coord_attention", "cbam"), ("triplet", "cbam"),
          ("residual_attention", "csra")]


def png_outputs(cell):
    return [o["data"]["image/png"] for o in cell.get("outputs", [])
            if "image/png" in o.get("data", {})]


def markdown_headings(nb):
    return [(i, line) for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
            for line in c.source.splitlines() if line.startswith("## ")]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_is_numbered_captioned_described_and_fits_the_column(path):
    """Each figure is one cell's only image, with a caption and a name (so the book numbers it)
    and alt text; drawn at most as wide as the column, so that its labels are not shrunk."""
    import base64
    import struct

    for i, cell in enumerate(json_cells(path)):
        images = png_outputs(cell)
        if not images:
            continue
        where = f"{path.name}, cell {i}"
        assert len(images) == 1, f"{where}: one figure per cell, got {len(images)}"
        meta = cell["metadata"].get("mystnb", {})
        figure, image = meta.get("figure", {}), meta.get("image", {})
        assert len(figure.get("caption", "")) >= 40, f"{where}: a caption (mystnb.figure.caption)"
        assert figure.get("name", "").startswith(f"{path.stem}-fig-"), (
            f"{where}: mystnb.figure.name is {figure.get('name')!r}, expected {path.stem}-fig-...")
        assert len(image.get("alt", "")) >= 40, f"{where}: alt text (mystnb.image.alt)"
        png = base64.b64decode(images[0])
        width = struct.unpack(">I", png[16:20])[0]
        assert width <= COLUMN_PX, f"{where}: {width} px wide, the column is {COLUMN_PX} px"


def json_cells(path):
    import json

    return json.loads(path.read_text())["cells"]


def test_figure_names_are_unique_in_the_book():
    names = [c["metadata"]["mystnb"]["figure"]["name"] for p in NOTEBOOKS for c in json_cells(p)
             if "name" in c["metadata"].get("mystnb", {}).get("figure", {})]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_every_heat_map_has_a_colour_bar(path):
    """A cell that draws values as colours draws their colour bar too; a cell that shows only
    photographs or RGB images says so in a comment `# no colour bar: <why>`."""
    for cell in code_cells(path):
        if HEAT_MAP.search(cell.source) and "# no colour bar:" not in cell.source:
            assert "colorbar(" in cell.source, (
                f"{path.stem}: a heat map without a colour bar: {cell.source.splitlines()[0]!r}")


@pytest.mark.parametrize("path", PAPER_CHAPTERS, ids=lambda p: p.stem)
def test_paper_chapter_opens_with_a_diagram_of_its_block(path):
    nb = jupytext.read(path)
    headings = markdown_headings(nb)
    symbols = next(i for i, line in headings if line.startswith("## Symbols"))
    diagram = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
               and c.metadata.get("mystnb", {}).get("figure", {}).get("name") == f"{path.stem}-fig-block"]
    assert diagram, f"{path.stem}: a figure named {path.stem}-fig-block"
    assert diagram[0] < symbols, "the diagram comes before the Symbols table"
    assert "block_diagram(" in nb.cells[diagram[0]].source, "drawn with the book's block_diagram"
    assert "#| include block_diagram" in nb.cells[diagram[0] - 1].source
    text = path.read_text()
    assert f"{{numref}}`{path.stem}-fig-block`" in text, "the text refers to the diagram"
    assert "paper's figure" not in text, "the text describes a figure the reader cannot see"


@pytest.mark.parametrize("path", PAPER_CHAPTERS, ids=lambda p: p.stem)
def test_paper_chapter_shows_a_check_rejecting_a_broken_module(path):
    """The book's idea on every page: before the exercises, a cell builds a broken module and a
    derivation check of the chapter rejects it (the output says so)."""
    notebook = ROOT / "book" / f"{path.stem}.ipynb"
    cells = json_cells(notebook)
    end = next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
               and "## Exercises" in "".join(c["source"]))
    shown = []
    for cell in cells[:end]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or "except AssertionError" not in source:
            continue
        printed = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))
        if "check_" in source and "rejects" in printed:
            shown.append(source.splitlines()[0])
    assert shown, f"{path.stem}: no cell before the exercises shows a check rejecting a module"


@pytest.mark.parametrize("path", PAPER_CHAPTERS, ids=lambda p: p.stem)
def test_paper_chapter_has_a_summary_before_its_exercises(path):
    titles = [line for _, line in markdown_headings(jupytext.read(path))]
    assert "## Summary" in titles, f"{path.stem}: a '## Summary' section"
    assert titles.index("## Summary") + 1 == titles.index("## Exercises"), (
        "the summary comes right before the exercises")


@pytest.mark.parametrize("a, b", LINKED, ids=lambda x: x if isinstance(x, str) else None)
def test_chapters_link_where_their_ideas_meet(a, b):
    for source, target in ((a, b), (b, a)):
        text = (ROOT / "book" / "src" / f"{source}.md").read_text()
        assert target in DOC_LINK.findall(text), f"{source} links to {{doc}}`{target}`"


@pytest.mark.parametrize("path", PAPER_CHAPTERS, ids=lambda p: p.stem)
def test_paper_chapter_links_another_paper_chapter(path):
    others = {p.stem for p in PAPER_CHAPTERS} - {path.stem, "se"}
    assert set(DOC_LINK.findall(path.read_text())) & others, (
        f"{path.stem} links to no other paper chapter besides SE")


@pytest.mark.parametrize("path", PAPER_CHAPTERS, ids=lambda p: p.stem)
def test_paper_equations_carry_their_numbers(path):
    """The paper's equations the text refers to are numbered with the paper's number."""
    text = path.read_text()
    tags = re.findall(r"\\tag\{([^}]+)\}", text)
    assert tags, f"{path.stem}: no equation is numbered (\\tag{{n}})"
    assert len(tags) == len(set(tags)), f"{path.stem}: an equation number twice: {tags}"


def test_nothing_refers_to_the_notes_or_to_files_outside_the_repository():
    """A reader has the book and the repository, not the notes its authors worked from or the
    files of their machine."""
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    pattern = re.compile(r"(the|user's|our) notes\b|PITFALLS|\.\./shared|/work/", re.IGNORECASE)
    offenders = []
    for name in files:
        if name.endswith((".png", ".zip", ".json", ".ipynb")) or name == "tests/test_chapters.py":
            continue
        path = ROOT / name
        if not path.is_file():
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{name}:{n}: {line.strip()[:80]}")
    assert not offenders, "\n".join(offenders)


def test_every_reference_links_its_paper_and_its_official_code():
    """Each entry of book/references.bib has a DOI, an arXiv number or the paper's page, and the
    official repository (`code`), which the book's bibliography style prints as links."""
    bib = (ROOT / "book" / "references.bib").read_text()
    for entry in re.split(r"\n(?=@)", bib.strip()):
        key = re.match(r"@\w+\{([^,]+),", entry).group(1)
        fields = set(re.findall(r"^\s+(\w+)\s*=", entry, re.MULTILINE))
        assert fields & {"doi", "eprint", "url"}, f"{key}: no DOI, arXiv number or URL"
        assert "code" in fields, f"{key}: no official code repository (code = {{...}})"
        code = re.search(r"code\s*=\s*\{([^}]+)\}", entry).group(1)
        assert code.startswith("https://github.com/"), f"{key}: {code}"
