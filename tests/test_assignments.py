"""The otter-grader assignments built by tools/assignments.py from the chapter sources.

Fast: the build (otter assign) and what the student notebook holds. Slow (the grader runs each
notebook, ~15 s each): the solutions score full marks, the unmodified student notebook scores
zero without crashing the grader, and broken submissions lose exactly the points of the tests
that catch them."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import assignments  # noqa: E402

import os

# ATTN_ASSIGNMENTS=se,cbam restricts the tests to those chapters (while writing one chapter's spec).
STEMS = sorted(s for s in assignments.SPECS
               if not os.environ.get("ATTN_ASSIGNMENTS") or s in os.environ["ATTN_ASSIGNMENTS"].split(","))


class _Built(dict):
    """stem -> the folder of its built assignment, built on first use (each xdist worker builds
    only the chapters its tests need)."""

    def __init__(self, root):
        super().__init__()
        self.root = root

    def __missing__(self, stem):
        self[stem] = assignments.build(stem, self.root)
        return self[stem]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return _Built(tmp_path_factory.mktemp("assignments"))


def cells(path):
    return nbformat.read(path, as_version=4).cells


# --------------------------------------------------------------------------- fast
def test_stub_keeps_signatures_and_docstrings_and_drops_bodies():
    source = ('class A(B):\n    """Doc."""\n\n    def f(self, x):\n        """F doc."""\n        return x + 1\n\n'
              '    def g(self):\n        return 2\n\n\nanswer = {1, 2}\nprint(answer)\n')
    stub = assignments.stub_source(source, ["A", "answer"], keep_rest=False)
    assert '"""F doc."""' in stub and "def f(self, x):" in stub and "def g(self):" in stub
    assert "return x + 1" not in stub and "return 2" not in stub and "print" not in stub
    assert 'raise NotImplementedError("A.f: your code here")' in stub
    assert "answer = ...  # your answer" in stub
    kept = assignments.stub_source(source, ["A.g"], keep_rest=True)
    assert "return x + 1" in kept and "return 2" not in kept and "print(answer)" in kept
    compile(stub, "stub", "exec"), compile(kept, "kept", "exec")
    with pytest.raises(SystemExit, match="not found"):
        assignments.stub_source(source, ["C"], keep_rest=False)


def test_grader_cell_writes_the_public_tests_exactly(tmp_path, monkeypatch):
    """The grader cell's literals round-trip any text (backslashes, triple quotes)."""
    tricky = {"q1": "x = '''a''' + \"\\\\n\" + r'\\d'\n", "q2": '"""doc"""\nprint("\\t")\n'}
    source = assignments.grader_cell_source("demo", tricky)
    assert source.rstrip().endswith("grader = otter.Notebook(tests_dir=str(_tests))")
    monkeypatch.chdir(tmp_path)
    exec(source.replace("grader = otter.Notebook(tests_dir=str(_tests))", "").replace("import otter", ""),
         {"sys": types.SimpleNamespace(path=[])})
    folder = tmp_path / ".otter_public_tests" / "demo"
    for name, text in {**tricky, "_grading_public": assignments.GRADING_PUBLIC.format()}.items():
        assert (folder / f"{name}.py").read_text() == text, name


@pytest.mark.parametrize("stem", STEMS)
def test_every_exercise_is_labelled_and_has_its_own_solution(stem):
    items, exercises = assignments.read_chapter(stem)
    assert exercises, "the chapter has exercises"
    graded = {q["label"] for q in assignments.SPECS[stem]["questions"] if q["label"]}
    for label, ex in exercises.items():
        assert label.startswith(f"{stem}-ex-"), label
        assert ex["solution"], f"{label} has no solution"
        if label in graded:
            assert re.search(r"\(\d+ points?\)$", ex["title"]), f"{label} states its points in the title"
        else:
            assert ex["title"].endswith("(not graded)"), f"{label}, a prose exercise, says it is not graded"
    code = {label for label, ex in exercises.items() if any(c.cell_type == "code" for c in ex["solution"])}
    assert code == graded, "every exercise with a code solution is a graded question, and only those"
    text = (ROOT / "book" / "src" / f"{stem}.md").read_text()
    assert text.count("{solution-start}") == text.count("{solution-end}")
    assert ":class: dropdown" in text


@pytest.mark.parametrize("stem", STEMS)
def test_points_in_the_titles_match_the_tests(stem):
    _, exercises = assignments.read_chapter(stem)
    for q in assignments.SPECS[stem]["questions"]:
        if q["label"]:
            stated = int(re.search(r"\((\d+) points?\)", exercises[q["label"]]["title"]).group(1))
            assert stated == sum(t[1] for t in q["tests"]), q["name"]


@pytest.mark.parametrize("stem", STEMS)
def test_public_tests_need_only_the_public_helpers(stem):
    """A public test runs in the student's runtime, which has _grading_public but not the autograder."""
    public = set(re.findall(r"^def (\w+)", assignments.GRADING_PUBLIC, re.MULTILINE))
    for q in assignments.SPECS[stem]["questions"]:
        for name, _, hidden, body in q["tests"]:
            if not hidden:
                used = set(re.findall(r"\bG\.(\w+)", body))
                assert used <= public, f"{q['name']}.{name} uses {sorted(used - public)}, not in GRADING_PUBLIC"


@pytest.mark.parametrize("stem", STEMS)
def test_student_notebook_holds_no_solution(built, stem):
    out = built[stem]
    student = cells(out / "student" / f"{stem}.ipynb")
    text = "\n".join(c.source for c in student)
    spec = assignments.SPECS[stem]
    items, exercises = assignments.read_chapter(stem)
    elsewhere = "\n".join(v.source for kind, v in items if kind == "cell")   # the chapter outside solutions
    for label, ex in exercises.items():
        for c in ex["solution"]:
            for line in c.source.splitlines():
                line = line.strip()
                if len(line) > 25 and line not in elsewhere and not line.startswith(("def ", "class ", '"""', "#")):
                    assert line not in text, f"solution line of {label} in the student notebook: {line}"
    for marker in spec["remove"]:
        assert marker not in text
    assert not any(c.get("outputs") for c in student if c.cell_type == "code"), "outputs left in"
    assert "BEGIN SOLUTION" not in text and "BEGIN TEST CONFIG" not in text, "otter markers left in"
    assert not re.search(r"^#\| ", text, re.MULTILINE), "the book's #| export markers left in"
    module_q = next(q for q in spec["questions"] if q["label"] is None)
    for target in module_q["stub"]:
        assert f'raise NotImplementedError("{target}: your code here")' in text
    first = next(c for c in student if c.cell_type == "code").source
    for package in ('("torch", "torch")', '("einops", "einops")', '("matplotlib", "matplotlib")',
                    f'("otter", "{assignments.OTTER_PIN}")'):
        assert package in first, f"the first cell installs {package}"
    grader = [c.source for c in student if c.cell_type == "code"][1]
    assert "grader = otter.Notebook(tests_dir=" in grader and "_grading_public" in grader, \
        "the second cell writes the public tests and starts the grader on them"
    for q in spec["questions"]:
        if any(not hidden for _, _, hidden, _ in q["tests"]):
            assert f'grader.check("{q["name"]}")' in text, "public tests are run from the notebook"
    solutions = "\n".join(c.source for c in cells(out / "solutions" / f"{stem}.ipynb"))
    assert "BEGIN SOLUTION" not in solutions
    assert (out / "autograder" / f"{stem}-autograder.zip").is_file()


@pytest.mark.parametrize("stem", STEMS)
def test_autograder_ships_what_the_hidden_tests_need(built, stem):
    import zipfile

    with zipfile.ZipFile(built[stem] / "autograder" / f"{stem}-autograder.zip") as z:
        names = set(z.namelist())
        module = assignments.SPECS[stem]["module"]
        assert {f"files/_grading.py", f"files/_ref_{stem}.py", f"files/_checks_{stem}.py",
                f"files/_mutants_{stem}.py"} <= names
        assert z.read(f"files/_checks_{stem}.py") == (ROOT / "attn_lib" / "checks" / f"{module}.py").read_bytes()
        tests = [n for n in names if n.startswith("tests/")]
        assert len(tests) == len(assignments.SPECS[stem]["questions"])


# --------------------------------------------------------------------------- slow: the grader
def grade(notebook: Path, zip_path: Path) -> dict[str, list[bool]]:
    """{question: [passed, ...] in the order of the spec's tests}."""
    import otter.api

    results = otter.api.grade_submission(str(notebook), str(zip_path), quiet=True)
    return {name: [r.passed for r in res.test_case_results] for name, res in results.results.items()}


def score(stem, passed):
    spec = {q["name"]: q for q in assignments.SPECS[stem]["questions"]}
    return sum(t[1] for name, flags in passed.items() for t, ok in zip(spec[name]["tests"], flags) if ok)


def failing(stem, passed):
    spec = {q["name"]: q for q in assignments.SPECS[stem]["questions"]}
    return {f"{name}.{t[0]}" for name, flags in passed.items() for t, ok in zip(spec[name]["tests"], flags) if not ok}


def total(stem):
    return sum(t[1] for q in assignments.SPECS[stem]["questions"] for t in q["tests"])


@pytest.mark.slow
@pytest.mark.parametrize("stem", STEMS)
def test_solutions_score_full_marks(built, stem):
    passed = grade(built[stem] / "solutions" / f"{stem}.ipynb", built[stem] / "autograder" / f"{stem}-autograder.zip")
    assert set(passed) == {q["name"] for q in assignments.SPECS[stem]["questions"]}
    assert failing(stem, passed) == set()
    assert score(stem, passed) == total(stem)


@pytest.mark.slow
@pytest.mark.parametrize("stem", STEMS)
def test_unmodified_student_notebook_scores_zero(built, stem):
    passed = grade(built[stem] / "student" / f"{stem}.ipynb", built[stem] / "autograder" / f"{stem}-autograder.zip")
    assert set(passed) == {q["name"] for q in assignments.SPECS[stem]["questions"]}, "the grader ran every question"
    assert score(stem, passed) == 0


# A broken submission: the solutions notebook with one line of the module changed, and the tests
# that must catch it (question.test); only those points are lost. Each chapter's spec file lists
# its own (tools/assignment_specs/<stem>.py, BROKEN).
BROKEN = {f"{stem}-{name}": (stem, *case) for stem in STEMS for name, case in assignments.SPECS[stem]["broken"].items()}


def test_every_paper_chapter_has_an_assignment():
    """The chapters that export a module (front matter attn_lib.module) are the assignments."""
    paper = {p.stem for p in (ROOT / "book" / "src").glob("*.md")
             if jupytext.read(p).metadata.get("attn_lib", {}).get("module")}
    assert set(assignments.SPECS) == paper


def test_every_chapter_has_two_broken_submissions():
    for stem in STEMS:
        assert len(assignments.SPECS[stem]["broken"]) >= 2, stem


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_submission_loses_exactly_the_points_of_its_checks(built, case, tmp_path):
    stem, old, new, caught = BROKEN[case]
    nb = nbformat.read(built[stem] / "solutions" / f"{stem}.ipynb", as_version=4)
    hits = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
    assert len(hits) == 1, f"the line to break is in one cell ({len(hits)})"
    hits[0].source = hits[0].source.replace(old, new)
    submission = tmp_path / f"{stem}.ipynb"
    nbformat.write(nb, submission)
    passed = grade(submission, built[stem] / "autograder" / f"{stem}-autograder.zip")
    assert failing(stem, passed) == caught
    spec = {q["name"]: q for q in assignments.SPECS[stem]["questions"]}
    lost = sum(t[1] for q in spec.values() for t in q["tests"] if f"{q['name']}.{t[0]}" in caught)
    assert score(stem, passed) == total(stem) - lost


# --------------------------------------------------------------------------- slow: a fresh runtime
RUN_IN_FRESH_RUNTIME = """
import json, sys
import nbclient, nbformat
nb = nbformat.read(sys.argv[1], as_version=4)
# run from an empty folder, as in Colab, where the notebook is not a file on disk
nbclient.NotebookClient(nb, timeout=900, allow_errors=True, resources={"metadata": {"path": sys.argv[2]}}).execute()
print(json.dumps([[c.source, c.get("outputs", [])] for c in nb.cells if c.cell_type == "code"]))
"""


def _fresh_runtime(tmp_path) -> Path:
    """A new virtual environment that sees the project's packages except the grader (otter-grader),
    as a Colab runtime has torch, einops and matplotlib but not otter: the student notebook's first
    cell must install it (from PyPI) before its grader cell starts it."""
    import subprocess
    import sysconfig

    env = tmp_path / "runtime"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    visible = tmp_path / "visible"
    visible.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("otter", "_otter", "pip", "__editable__", "attn")):
            (visible / entry.name).symlink_to(entry)
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "project_packages.pth").write_text(f"{visible}\n")
    return env / "bin" / "python"


@pytest.mark.slow
def test_student_notebook_runs_in_a_fresh_runtime(built, tmp_path):
    """The student notebook, run where otter-grader is not installed and the notebook is not on
    disk: its first cell installs the grader, its grader cell writes the public tests, and
    grader.check reports the unwritten module; the solutions notebook passes the same check."""
    import json
    import subprocess

    stem = "se" if "se" in STEMS else STEMS[0]
    python = _fresh_runtime(tmp_path)
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('otter'))"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "None", "the fresh runtime must not have otter before the notebook runs"
    script = tmp_path / "run.py"
    script.write_text(RUN_IN_FRESH_RUNTIME)
    module_q = next(q["name"] for q in assignments.SPECS[stem]["questions"] if q["label"] is None)
    for kind, expected in (("student", "not written yet (NotImplementedError)"), ("solutions", "All test cases passed")):
        workdir = tmp_path / kind
        workdir.mkdir()
        done = subprocess.run([str(python), str(script), str(built[stem] / kind / f"{stem}.ipynb"), str(workdir)],
                              capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stderr[-2000:]
        cells = json.loads(done.stdout.strip().splitlines()[-1])
        errors = [o.get("ename", "") + ": " + o.get("evalue", "") for _, outs in cells[:2] for o in outs
                  if o.get("output_type") == "error"]
        assert not errors, f"the set-up or grader cell failed in the fresh runtime: {errors}"
        check = [outs for source, outs in cells if source.strip() == f'grader.check("{module_q}")']
        assert check, "the notebook checks the module question"
        text = json.dumps(check[0])
        assert expected in text, f"{kind}: grader.check said {text[:500]}"
    installed = subprocess.run([str(python), "-c", "import otter, sys; print(otter.__version__, otter.__file__)"],
                               capture_output=True, text=True, check=True).stdout
    assert installed.startswith(assignments.OTTER_PIN.split("==")[1]) and str(tmp_path / "runtime") in installed
