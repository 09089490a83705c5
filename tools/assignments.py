"""Build each chapter's otter-grader assignment from the chapter source (no hand-kept copy).

    python tools/assignments.py [STEM ...]      -> _build/assignments/<stem>/{student,autograder,solutions}/

For a chapter with an entry in SPECS:

* ``student/<stem>.ipynb``: the chapter as a notebook, with the module the student writes stubbed
  (the methods SPECS names keep their signature and docstring, the body becomes a
  ``raise NotImplementedError``), every exercise solution and its output removed (a code exercise
  keeps a stub of the artefacts it names), the cells SPECS lists as showing the implementation
  removed, public tests visible (``grader.check("<question>")``), and a first cell that installs
  torch, einops, matplotlib and otter-grader when they are missing;
* ``autograder/<stem>-autograder.zip``: otter's autograder, whose hidden tests run the chapter's
  derivation checks (``attn_lib/checks/<module>.py``, shipped in the zip with the reference module
  and ``tests/test_derivation_<stem>.py``, so the zip grades in a runtime without attn_lib) on the
  student's module, compare it with the reference under copied weights, and grade "write the
  check" exercises by whether the student's check accepts the reference and rejects the broken
  modules of ``tests/test_derivation_<stem>.py``;
* ``solutions/<stem>.ipynb``: the same notebook with the solutions.

Exercises are read from the chapter's sphinx-exercise directives: ``{exercise}`` with a
``:label:``, and its ``{solution-start} <label>`` ... ``{solution-end}`` (code cells and prose) or
``{solution} <label>`` (prose only). Grade one notebook: ``otter run -a <zip> <notebook>``.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import chapters  # noqa: E402

OUT = ROOT / "_build" / "assignments"
OTTER_PIN = "otter-grader==7.0.0"
FENCE = re.compile(r"^(`{3,}|:{3,})\{(exercise|solution|solution-start|solution-end)\}[ \t]*(.*)$")

# --------------------------------------------------------------------------- grading specs
# A question: name (otter's), the exercise label it grades (None: the module), the artefacts of
# the solution cell that the student writes (stubs), and its tests. A test is
# (name, points, hidden, body): body is the text of the test function's body, whose arguments are
# the artefacts (otter passes them from the notebook's globals). `G` is the shipped helper module.
SPECS: dict[str, dict] = {
    "cbam": {
        "module": "cbam",
        "mutant_size": (12, 3),
        "remove": ["def official_cbam_forward("],
        "questions": [
            {
                "name": "cbam_module",
                "label": None,
                "cell": "class CBAM(nn.Module):",
                "stub": ["ChannelGate.descriptors", "ChannelGate.forward", "SpatialGate.pooled",
                         "SpatialGate.forward", "CBAM.forward"],
                "prompt": (
                    "**Write the module (11 points).** In the cell below, write the bodies of "
                    "`ChannelGate.descriptors`, `ChannelGate.forward`, `SpatialGate.pooled`, "
                    "`SpatialGate.forward` and `CBAM.forward`, as their docstrings and the equations "
                    "above say, in both variants. The constructors are given: keep the attribute "
                    "names, the tests copy weights into them. Public test: the output shape (1 point). "
                    "Hidden tests: the chapter's four derivation checks on `CBAM(12, reduction=3)` in "
                    "both variants (2 points each) and equality with the reference module under "
                    "copied weights (2 points)."),
                "args": "CBAM",
                "tests": [
                    ("shape", 1, False,
                     "G.run('output shape', 'CBAM(16, reduction=4) maps (2, 16, 7, 9) to (2, 16, 7, 9)', "
                     "lambda: G.assert_shape(CBAM(16, reduction=4), (2, 16, 7, 9)))"),
                    *[(name, 2, True,
                       f"G.run_check('cbam', {name!r}, lambda variant: CBAM(12, reduction=3, variant=variant))")
                      for name in ("check_cbam_matches_formula", "check_cbam_channel_mlp_is_shared",
                                   "check_cbam_gate_properties", "check_cbam_is_channel_then_spatial")],
                    ("reference", 2, True,
                     "G.compare_with_reference('cbam', 'CBAM', CBAM, dict(channels=12, reduction=3), (2, 5, 7))"),
                ],
            },
            {
                "name": "spatial_first",
                "label": "cbam-ex-spatial-first",
                "stub": ["SpatialFirstCBAM", "rejected_by"],
                "args": "SpatialFirstCBAM, rejected_by",
                "tests": [
                    ("spatial_first_forward", 2, True,
                     "G.compare_spatial_first(SpatialFirstCBAM)"),
                    ("rejected_by", 1, True,
                     "G.run('rejected_by', 'the checks that reject the spatial-first order', lambda: G.assert_equal("
                     "rejected_by, {'check_cbam_matches_formula', 'check_cbam_is_channel_then_spatial'}))"),
                ],
            },
            {
                "name": "parameter_budget",
                "label": "cbam-ex-parameter-budget",
                "stub": ["spatial_fraction", "first_c"],
                "args": "spatial_fraction, first_c",
                "tests": [
                    ("spatial_fraction", 1, True,
                     "G.run('spatial_fraction', 'the spatial gate holds 98 of the 8290 parameters of CBAM(256)', "
                     "lambda: G.assert_close_number(spatial_fraction, 98 / (2 * 256 * 16 + 98)))"),
                    ("first_c", 1, True,
                     "G.run('first_c', 'the first C with 2 C max(1, C // 16) > 98', "
                     "lambda: G.assert_equal(first_c, 32))"),
                ],
            },
            {
                "name": "official_to_paper",
                "label": "cbam-ex-official-to-paper",
                "stub": ["official_to_paper"],
                "args": "official_to_paper",
                "tests": [
                    ("folded", 3, True, "G.check_official_to_paper(official_to_paper)"),
                ],
            },
            {
                "name": "check_max",
                "label": "cbam-ex-check-max",
                "stub": ["check_channel_gate_sees_the_max"],
                "args": "check_channel_gate_sees_the_max",
                "tests": [
                    ("accepts_cbam", 1, True,
                     "G.expect_accepts('cbam', check_channel_gate_sees_the_max, 'CBAM')"),
                    ("rejects_x1_plus_x1", 1, True,
                     "G.expect_rejects('cbam', check_channel_gate_sees_the_max, 'x1-plus-x1')"),
                    ("rejects_non_global_max", 1, True,
                     "G.expect_rejects('cbam', check_channel_gate_sees_the_max, 'non-global-max')"),
                ],
            },
        ],
    },
    "se": {
        "module": "se",
        "mutant_size": (12, 3),
        "remove": ["gain = torch.sigmoid(torch.relu(squeezed"],
        "questions": [
            {
                "name": "se_module",
                "label": None,
                "cell": "class SE(nn.Module):",
                "stub": ["SE.squeeze", "SE.gate", "SE.forward"],
                "prompt": (
                    "**Write the module (7 points).** In the cell below, write the bodies of "
                    "`SE.squeeze`, `SE.gate` and `SE.forward`, as their docstrings and equations (2)-(4) "
                    "say. The constructor is given: keep the attribute names, the tests copy weights "
                    "into them. Public test: the output shape (1 point). Hidden tests: the chapter's "
                    "two derivation checks on `SE(12, reduction=3)` in both variants (2 points each) "
                    "and equality with the reference module under copied weights (2 points)."),
                "args": "SE",
                "tests": [
                    ("shape", 1, False,
                     "G.run('output shape', 'SE(16, reduction=4) maps (2, 16, 7, 9) to (2, 16, 7, 9)', "
                     "lambda: G.assert_shape(SE(16, reduction=4), (2, 16, 7, 9)))"),
                    *[(name, 2, True,
                       f"G.run_check('se', {name!r}, lambda variant: SE(12, reduction=3, variant=variant))")
                      for name in ("check_se_matches_formula", "check_se_is_a_channel_gain")],
                    ("reference", 2, True,
                     "G.compare_with_reference('se', 'SE', SE, dict(channels=12, reduction=3), (2, 5, 7))"),
                ],
            },
            {
                "name": "max_squeeze",
                "label": "se-ex-max-squeeze",
                "stub": ["SEMax", "rejected_by"],
                "args": "SEMax, rejected_by",
                "tests": [
                    ("semax_forward", 2, True, "G.compare_se_max(SEMax)"),
                    ("rejected_by", 1, True,
                     "G.run('rejected_by', 'the checks that reject a max squeeze', "
                     "lambda: G.assert_equal(rejected_by, {'check_se_matches_formula'}))"),
                ],
            },
            {
                "name": "reduction",
                "label": "se-ex-reduction",
                "stub": ["n_params_by_r"],
                "args": "n_params_by_r",
                "tests": [
                    ("n_params_by_r", 1, True,
                     "G.run('n_params_by_r', 'SE(64) has 2 * 64 * (64 // r) weights', lambda: G.assert_equal("
                     "n_params_by_r, {r: 2 * 64 * (64 // r) for r in (4, 8, 16, 32)}))"),
                ],
            },
            {
                "name": "bias",
                "label": "se-ex-bias",
                "stub": ["drop_biases"],
                "args": "drop_biases",
                "tests": [("drop_biases", 2, True, "G.check_drop_biases(drop_biases)")],
            },
            {
                "name": "check_mean",
                "label": "se-ex-check-mean",
                "stub": ["check_se_squeeze_is_the_mean"],
                "args": "check_se_squeeze_is_the_mean",
                "tests": [
                    ("accepts_se", 1, True, "G.expect_accepts('se', check_se_squeeze_is_the_mean, 'SE')"),
                    ("rejects_max_squeeze", 1, True,
                     "G.expect_rejects('se', check_se_squeeze_is_the_mean, 'max-squeeze')"),
                    ("rejects_wrong_axis", 1, True,
                     "G.expect_rejects('se', check_se_squeeze_is_the_mean, 'wrong-axis')"),
                ],
            },
        ],
    },
}

# The helper the hidden tests import: it loads the shipped reference module, checks and mutants
# under private names, and turns every failure into one line that names the check and its meaning.
GRADING_HELPER = '''\
"""Grading helpers for the otter tests of this assignment (generated by tools/assignments.py)."""
import copy
import importlib.util
import sys
import types
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
_CACHE = {}


def _load(name, path, aliases=None):
    if name in _CACHE:
        return _CACHE[name]
    saved = {k: sys.modules.get(k) for k in (aliases or {})}
    sys.modules.update(aliases or {})
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    _CACHE[name] = module
    return module


def reference(chapter):
    return _load(f"_grading_ref_{chapter}", HERE / f"_ref_{chapter}.py")


def checks(chapter):
    return _load(f"_grading_checks_{chapter}", HERE / f"_checks_{chapter}.py")


def _pytest_shim():
    try:
        import pytest
        return pytest
    except ImportError:
        shim = types.ModuleType("pytest")
        shim.mark = types.SimpleNamespace(parametrize=lambda *a, **k: (lambda f: f))
        return shim


def mutants(chapter, module):
    """tests/test_derivation_<chapter>.py, importing the shipped reference and checks."""
    pkg, sub = types.ModuleType("attn_lib"), types.ModuleType("attn_lib.checks")
    ref, chk = reference(chapter), checks(chapter)
    aliases = {"attn_lib": pkg, "attn_lib.checks": sub, f"attn_lib.{module}": ref,
               f"attn_lib.checks.{module}": chk, "pytest": _pytest_shim()}
    return _load(f"_grading_mutants_{chapter}", HERE / f"_mutants_{chapter}.py", aliases)


def _first_line(e):
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def run(label, meaning, fn):
    """Run fn; any failure becomes an AssertionError naming `label` and what it means."""
    try:
        fn()
    except AssertionError as e:
        raise AssertionError(f"{label} failed: {meaning} ({_first_line(e)})") from None
    except NotImplementedError:
        raise AssertionError(f"{label}: not written yet (NotImplementedError)") from None
    except Exception as e:
        raise AssertionError(f"{label} could not run: {meaning} ({type(e).__name__}: {_first_line(e)})") from None


def run_check(chapter, check_name, build):
    """One derivation check of the chapter on the student's module, in both variants."""
    check = getattr(checks(chapter), check_name)
    meaning = (check.__doc__ or check_name).strip().split(". ")[0].rstrip(".")
    for variant in ("paper", "official"):
        run(f"{check_name} (variant={variant!r})", meaning, lambda: check(build(variant)))


def assert_shape(module, shape):
    with torch.no_grad():
        out = module(torch.randn(*shape))
    assert tuple(out.shape) == tuple(shape), f"got {tuple(out.shape)}"


def assert_equal(got, want):
    assert got == want, f"got {got!r}"


def assert_close_number(got, want):
    assert isinstance(got, (int, float)) and abs(got - want) < 1e-9 * max(1, abs(want)), f"got {got!r}"


def _randomise(m, g):
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
        for name, buf in m.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g, dtype=buf.dtype) + 0.5)
            elif buf.is_floating_point():
                buf.copy_(torch.randn(buf.shape, generator=g, dtype=buf.dtype) * 0.5)


def compare_with_reference(chapter, class_name, student_cls, kwargs, size, seed=0):
    """The student's module equals the reference module with the same (copied) weights."""
    def compare():
        ref_cls = getattr(reference(chapter), class_name)
        for variant in ("paper", "official"):
            g = torch.Generator().manual_seed(seed)
            ref = ref_cls(**kwargs, variant=variant).double().eval()
            _randomise(ref, g)
            mine = student_cls(**kwargs, variant=variant).double().eval()
            mine.load_state_dict(ref.state_dict())
            B, H, W = size
            x = torch.randn(B, kwargs["channels"], H, W, generator=g, dtype=torch.float64)
            with torch.no_grad():
                torch.testing.assert_close(mine(x), ref(x), rtol=1e-10, atol=1e-12)
    run(f"{class_name} equals the reference", f"the same output as attn_lib's {class_name} under copied weights",
        compare)


def expect_accepts(chapter, check, class_name):
    if not callable(check):
        raise AssertionError("your check is not defined yet")
    ref_cls = getattr(reference(chapter), class_name)
    for variant in ("paper", "official"):
        run(f"your check on a correct {class_name} (variant={variant!r})",
            f"a check must accept the reference {class_name}",
            lambda: check(ref_cls(12, reduction=3, variant=variant)))


def expect_rejects(chapter, check, mutant):
    if not callable(check):
        raise AssertionError("your check is not defined yet")
    spec = mutants(chapter, chapter)
    cls, breakage, _ = spec.MUTANTS[mutant]
    doc = (getattr(breakage, "__doc__", None) or getattr(cls, "__doc__", None) or mutant).strip().splitlines()[0]
    for variant in ("paper", "official"):
        broken = cls(12, reduction=3, variant=variant)
        breakage(broken)
        try:
            check(broken)
        except AssertionError:
            continue
        except Exception as e:
            raise AssertionError(f"your check crashed on the broken block {mutant!r} ({type(e).__name__}: "
                                 f"{_first_line(e)}); a check rejects with an AssertionError") from None
        raise AssertionError(f"your check accepts the broken block {mutant!r} (variant={variant!r}): {doc}")


# ---- exercise-specific tests
import contextlib


@contextlib.contextmanager
def _reference_global(fn, name, value):
    """Run the student's function with the reference class under `name` in its globals."""
    g = getattr(fn, "__globals__", {})
    saved = g.get(name)
    g[name] = value
    try:
        yield
    finally:
        g[name] = saved


def compare_spatial_first(student_cls):
    def compare():
        ref = reference("cbam")
        for variant in ("paper", "official"):
            g = torch.Generator().manual_seed(5)
            block = ref.CBAM(12, reduction=3, variant=variant).double().eval()
            _randomise(block, g)
            assert "forward" in vars(student_cls), "SpatialFirstCBAM does not define forward"
            rebased = type("SpatialFirstCBAM", (ref.CBAM,), {"forward": student_cls.forward})   # your forward only
            mine = rebased(12, reduction=3, variant=variant).double().eval()
            mine.load_state_dict(block.state_dict())
            x = torch.randn(2, 12, 5, 7, generator=g, dtype=torch.float64)
            with torch.no_grad():
                f_s = block.spatial_gate(x) * x
                torch.testing.assert_close(mine(x), block.channel_gate(f_s) * f_s, rtol=1e-10, atol=1e-12)
    run("SpatialFirstCBAM", "M_c(F_s) * F_s with F_s = M_s(F) * F, under copied weights", compare)


def check_official_to_paper(fn):
    def compare():
        ref = reference("cbam")
        g = torch.Generator().manual_seed(6)
        official = ref.CBAM(12, reduction=3, variant="official").double().eval()
        _randomise(official, g)
        with torch.no_grad():
            for i in (0, 2):
                official.channel_gate.mlp[i].bias.zero_()
            bn = official.spatial_gate.bn
            bn.bias.copy_(bn.weight / torch.sqrt(bn.running_var + bn.eps) * bn.running_mean)
            x = torch.randn(2, 12, 6, 5, generator=g, dtype=torch.float64)
            want = official(x)
            with _reference_global(fn, "CBAM", ref.CBAM):         # graded apart from your CBAM
                paper = fn(copy.deepcopy(official))
            assert getattr(paper, "variant", None) == "paper", "the result is not a paper-variant CBAM"
            torch.testing.assert_close(paper.eval()(x), want, rtol=1e-10, atol=1e-12)
    run("official_to_paper", "the paper block computes the official block's function", compare)


def compare_se_max(student_cls):
    def compare():
        ref = reference("se")
        g = torch.Generator().manual_seed(5)
        block = ref.SE(12, reduction=3).double().eval()
        _randomise(block, g)
        assert "squeeze" in vars(student_cls), "SEMax does not define squeeze"
        rebased = type("SEMax", (ref.SE,), {"squeeze": student_cls.squeeze})           # your squeeze only
        mine = rebased(12, reduction=3).double().eval()
        mine.load_state_dict(block.state_dict())
        x = torch.randn(2, 12, 5, 7, generator=g, dtype=torch.float64)
        with torch.no_grad():
            s = block.excite(x.amax((2, 3)))[:, :, None, None]
            torch.testing.assert_close(mine(x), x * s, rtol=1e-10, atol=1e-12)
    run("SEMax", "SE with z = the maximum of each channel, under copied weights", compare)


def check_drop_biases(fn):
    def compare():
        ref = reference("se")
        g = torch.Generator().manual_seed(6)
        official = ref.SE(12, reduction=3, variant="official").double()
        _randomise(official, g)
        with _reference_global(fn, "SE", ref.SE):                 # graded apart from your SE
            paper = fn(official)
        assert getattr(paper, "variant", None) == "paper", "the result is not a paper-variant SE"
        assert paper.excite[0].bias is None and paper.excite[2].bias is None, "the result has biases"
        for i in (0, 2):
            torch.testing.assert_close(paper.excite[i].weight, official.excite[i].weight, rtol=0, atol=0)
    run("drop_biases", "a paper SE with the official block's W_1 and W_2", compare)
'''


# --------------------------------------------------------------------------- reading exercises
def segments(text: str):
    """Split markdown into ("text", str) and (kind, arg, options, body) directive pieces."""
    out, lines, i = [], text.split("\n"), 0
    buf: list[str] = []
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            buf.append(lines[i])
            i += 1
            continue
        if buf:
            out.append(("text", "\n".join(buf)))
            buf = []
        fence, kind, arg = m.group(1), m.group(2), m.group(3).strip()
        j = i + 1
        while j < len(lines) and lines[j].strip() != fence:
            j += 1
        body = lines[i + 1 : j]
        options = {}
        while body and body[0].startswith(":"):
            key, _, value = body.pop(0)[1:].partition(":")
            options[key.strip()] = value.strip()
        out.append((kind, arg, options, "\n".join(body).strip()))
        i = j + 1
    if buf:
        out.append(("text", "\n".join(buf)))
    return out


def read_chapter(stem: str):
    """The chapter's cells with exercises and solutions taken out:
    (items, exercises) where items is a list of ("cell", cell) and ("exercise", label), and
    exercises maps label -> {"title", "body", "number", "solution": [cells]}."""
    path = chapters.SOURCES / f"{stem}.md"
    nb, plain = chapters.read_source(path), jupytext.read(path)
    items, exercises, open_label = [], {}, None
    for cell, unexpanded in zip(nb.cells, plain.cells):
        if cell.cell_type == "code":
            if unexpanded.source.strip().split("\n")[-1].startswith(chapters.INCLUDE):
                cell.metadata["attn_include"] = True          # shared code the module cell needs
            if open_label:
                exercises[open_label]["solution"].append(cell)
            else:
                items.append(("cell", cell))
            continue
        for seg in segments(cell.source):
            if seg[0] == "text":
                if not seg[1].strip():
                    continue
                md = nbformat.v4.new_markdown_cell(seg[1].strip())
                if open_label:
                    exercises[open_label]["solution"].append(md)
                else:
                    items.append(("cell", md))
                continue
            kind, arg, options, body = seg
            if kind == "exercise":
                label = options.get("label") or sys.exit(f"{stem}: an exercise without :label:")
                exercises[label] = {"title": arg, "body": body, "number": len(exercises) + 1, "solution": []}
                items.append(("exercise", label))
            elif kind == "solution":
                exercises[arg]["solution"].append(nbformat.v4.new_markdown_cell(body))
            elif kind == "solution-start":
                open_label = arg
            elif kind == "solution-end":
                open_label = None
    return items, exercises


# --------------------------------------------------------------------------- stubs
def _body_range(func: ast.FunctionDef):
    body = func.body
    start = 1 if (body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
                  and isinstance(body[0].value.value, str)) else 0
    if start >= len(body):
        return None
    return body[start].lineno, func.end_lineno, body[start].col_offset


def stub_source(source: str, targets: list[str], keep_rest: bool) -> str:
    """The source with the bodies of `targets` replaced by `raise NotImplementedError`.
    A target is "Class.method", "Class" (all its methods), "function" or "name" (an assignment,
    which becomes `name = ...`). keep_rest=False keeps only the targets."""
    tree = ast.parse(source)
    lines = source.split("\n")
    replace: list[tuple[int, int, list[str]]] = []
    keep: list[tuple[int, int]] = []
    found = set()

    def stub_func(func, owner=""):
        rng = _body_range(func)
        if rng:
            start, end, col = rng
            what = f"{owner}{func.name}"
            replace.append((start, end, [" " * col + f'raise NotImplementedError("{what}: your code here")']))

    for node in tree.body:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        if isinstance(node, ast.ClassDef):
            methods = [n for n in node.body if isinstance(n, ast.FunctionDef)]
            if node.name in targets:
                found.add(node.name)
                for n in methods:
                    stub_func(n, f"{node.name}.")
                keep.append((first, node.end_lineno))
            else:
                for n in methods:
                    if f"{node.name}.{n.name}" in targets:
                        found.add(f"{node.name}.{n.name}")
                        stub_func(n, f"{node.name}.")
                if keep_rest:
                    keep.append((first, node.end_lineno))
        elif isinstance(node, ast.FunctionDef) and node.name in targets:
            found.add(node.name)
            stub_func(node)
            keep.append((first, node.end_lineno))
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in targets for t in node.targets):
            name = next(t.id for t in node.targets if isinstance(t, ast.Name) and t.id in targets)
            found.add(name)
            replace.append((node.lineno, node.end_lineno, [f"{name} = ...  # your answer"]))
            keep.append((node.lineno, node.end_lineno))
        elif keep_rest:
            keep.append((first, node.end_lineno))
    missing = set(targets) - found
    if missing:
        raise SystemExit(f"stub targets not found in the solution cell: {sorted(missing)}")
    new = {i: line for i, line in enumerate(lines, 1)}
    for start, end, text in replace:
        for i in range(start, end + 1):
            new.pop(i, None)
        new[start] = "\n".join(text)
    if keep_rest:
        return "\n".join(new[i] for i in sorted(new))
    pieces = []
    for start, end in keep:
        pieces.append("\n".join(new[i] for i in range(start, end + 1) if i in new))
    return "\n\n\n".join(pieces)


# --------------------------------------------------------------------------- the master notebook
def raw(text):
    return nbformat.v4.new_raw_cell(text)


def setup_cell(cell, stem):
    head = textwrap.dedent(f'''\
        # Set-up of the assignment: installs what a fresh (Colab-like) runtime lacks, then starts the grader.
        import importlib.util, subprocess, sys
        for _module, _package in [("torch", "torch"), ("einops", "einops"), ("matplotlib", "matplotlib"),
                                  ("otter", "{OTTER_PIN}")]:
            if importlib.util.find_spec(_module) is None:
                subprocess.run([sys.executable, "-m", "pip", "install", "-q", _package], check=True)
        import otter
        grader = otter.Notebook("{stem}.ipynb")
        ''')
    rest = [line for line in cell.source.split("\n")
            if not line.startswith(("# Set-up", "import importlib.util", "if importlib.util.find_spec",
                                    "    subprocess.run("))]
    return nbformat.v4.new_code_cell(head + "\n".join(rest).strip() + "\n")


def question_cells(q, prompt_md, solution_cells, stub_targets, keep_rest):
    cells = [raw(f"# BEGIN QUESTION\nname: {q['name']}\npoints: {sum(t[1] for t in q['tests'])}"),
             nbformat.v4.new_markdown_cell(prompt_md), raw("# BEGIN SOLUTION")]
    code_done = False
    for c in solution_cells:
        if c.cell_type == "code" and not code_done:
            stub = stub_source(c.source, stub_targets, keep_rest)
            cells.append(nbformat.v4.new_code_cell(
                f"# BEGIN SOLUTION NO PROMPT\n{c.source.strip()}\n# END SOLUTION",
                metadata={"attn_assign": {"stub": stub}}))
            code_done = True
        elif c.cell_type == "code":
            cells.append(nbformat.v4.new_code_cell(f"# BEGIN SOLUTION NO PROMPT\n{c.source.strip()}\n# END SOLUTION",
                                                   metadata={"attn_assign": {"stub": ""}}))
        else:
            cells.append(nbformat.v4.new_markdown_cell(c.source))
    cells.append(raw("# END SOLUTION"))
    cells.append(raw("# BEGIN TESTS"))
    for name, points, hidden, body in q["tests"]:
        config = f'""" # BEGIN TEST CONFIG\nhidden: {str(hidden).lower()}\npoints: {points}\n""" # END TEST CONFIG\n'
        cells.append(nbformat.v4.new_code_cell(
            f"{config}def test_{name}({q['args']}):\n    import _grading as G\n    {body}"))
    cells += [raw("# END TESTS"), raw("# END QUESTION")]
    return cells


def master_notebook(stem: str, spec: dict) -> nbformat.NotebookNode:
    items, exercises = read_chapter(stem)
    questions = {q["label"]: q for q in spec["questions"] if q["label"]}
    module_q = next(q for q in spec["questions"] if q["label"] is None)
    unknown = set(questions) - set(exercises)
    if unknown:
        raise SystemExit(f"{stem}: SPECS names exercises the chapter does not have: {sorted(unknown)}")
    files = [f"_grading.py", f"_ref_{stem}.py", f"_checks_{stem}.py", f"_mutants_{stem}.py"]
    config = {"name": stem, "init_cell": False, "export_cell": False, "check_all_cell": False,
              "run_tests": False, "solutions_pdf": False, "generate": True,
              "tests": {"files": False, "ok_format": False}, "autograder_files": files}
    cells = [raw("# ASSIGNMENT CONFIG\n" + json.dumps(config, indent=1))]
    first_code = True
    # The shared code the module cell uses (input checks, factory keywords) comes before the module
    # question, whose tests otter runs right after its cell.
    includes = [value for kind, value in items if kind == "cell" and value.metadata.get("attn_include")]
    for kind, value in items:
        if kind == "cell":
            cell = value
            if cell.metadata.get("attn_include"):
                continue
            if cell.cell_type == "code" and first_code:
                cells.append(setup_cell(cell, stem))
                first_code = False
                continue
            if cell.cell_type == "code" and module_q["cell"] in cell.source:
                cells += [nbformat.v4.new_code_cell(c.source) for c in includes]
                cells += question_cells(module_q, module_q["prompt"], [cell], module_q["stub"], keep_rest=True)
                continue
            new = (nbformat.v4.new_code_cell(cell.source) if cell.cell_type == "code"
                   else nbformat.v4.new_markdown_cell(cell.source))
            if cell.cell_type == "code" and any(s in cell.source for s in spec["remove"]):
                new.metadata["attn_assign"] = {"student": "remove"}
            cells.append(new)
            continue
        ex = exercises[value]
        prompt = f"**Exercise {ex['number']}: {ex['title']}.** {ex['body']}"
        q = questions.get(value)
        if q is None:                                  # a prose exercise: its answer is prose
            cells.append(nbformat.v4.new_markdown_cell(prompt))
            cells.append(nbformat.v4.new_markdown_cell("_Your answer here._"))
            for c in ex["solution"]:
                new = nbformat.v4.new_markdown_cell(c.source) if c.cell_type == "markdown" else \
                    nbformat.v4.new_code_cell(c.source)
                new.metadata["attn_assign"] = {"student": "remove"}
                cells.append(new)
            continue
        cells += question_cells(q, prompt, ex["solution"], q["stub"], keep_rest=False)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return nb


# --------------------------------------------------------------------------- build
def clean_solution_markers(source: str) -> str:
    return "\n".join(line for line in source.split("\n")
                     if line.strip() not in ("# BEGIN SOLUTION NO PROMPT", "# END SOLUTION")).strip()


def build(stem: str, root: Path = OUT) -> Path:
    """Write root/<stem>/{student,autograder,solutions}/."""
    spec = SPECS[stem]
    out = Path(root) / stem
    work = out / "_work"
    shutil.rmtree(out, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "_grading.py").write_text(GRADING_HELPER, encoding="utf-8")
    shutil.copy(ROOT / "attn_lib" / f"{spec['module']}.py", work / f"_ref_{stem}.py")
    shutil.copy(ROOT / "attn_lib" / "checks" / f"{spec['module']}.py", work / f"_checks_{stem}.py")
    shutil.copy(ROOT / "tests" / f"test_derivation_{stem}.py", work / f"_mutants_{stem}.py")
    nbformat.write(master_notebook(stem, spec), work / f"{stem}.ipynb")
    dist = work / "dist"
    otter = Path(sys.executable).with_name("otter")
    done = subprocess.run([str(otter), "assign", f"{stem}.ipynb", "dist"], cwd=work, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"otter assign failed for {stem}:\n{done.stdout}\n{done.stderr}")
    # student notebook: stubs in, revealing cells out, no outputs
    student = nbformat.read(dist / "student" / f"{stem}.ipynb", as_version=4)
    cells = []
    for cell in student.cells:
        meta = cell.metadata.pop("attn_assign", None) or {}
        if meta.get("student") == "remove":
            continue
        if "stub" in meta:
            if not meta["stub"]:
                continue
            cell.source = meta["stub"]
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    student.cells = cells
    for d in ("student", "autograder", "solutions"):
        (out / d).mkdir()
    nbformat.write(student, out / "student" / f"{stem}.ipynb")
    solutions = nbformat.read(dist / "autograder" / f"{stem}.ipynb", as_version=4)
    for cell in solutions.cells:
        cell.metadata.pop("attn_assign", None)
        if cell.cell_type == "code":
            cell.source = clean_solution_markers(cell.source)
    nbformat.write(solutions, out / "solutions" / f"{stem}.ipynb")
    zips = sorted((dist / "autograder").glob("*.zip"))
    shutil.copy(zips[-1], out / "autograder" / f"{stem}-autograder.zip")
    shutil.rmtree(work)
    return out


def main(argv: list[str] | None = None) -> int:
    stems = (argv if argv is not None else sys.argv[1:]) or sorted(SPECS)
    missing = [s for s in stems if s not in SPECS]
    if missing:
        sys.exit(f"no assignment spec for {missing}; chapters with one: {sorted(SPECS)}")
    for stem in stems:
        out = build(stem)
        print(f"built {out.relative_to(ROOT)}: student/{stem}.ipynb, autograder/{stem}-autograder.zip, "
              f"solutions/{stem}.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
