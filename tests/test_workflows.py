"""The GitHub Actions workflows in .github/workflows: each file valid against the GitHub workflow
schema (SchemaStore's, vendored in check-jsonschema: no network), and the triggers, jobs and
steps the project relies on. test.yml runs `make test` on pushes and pull requests (Python 3.11,
Debian's Chromium for the browser tests); book.yml builds with `make book`, passing the
repository it runs in as REPO_URL, and deploys _build/html to GitHub Pages; gpu.yml runs
`make test-gpu` on a self-hosted GPU runner after installing the CUDA build of the pinned torch;
publish.yml runs only on version tags, checks the tag against attn_lib.__version__ (the step's
script is run here on a matching and a wrong tag), builds, runs twine check and publishes with
PyPI trusted publishing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import attn_lib

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("test", "book", "gpu", "publish")
REPO_URL = "${{ github.server_url }}/${{ github.repository }}"


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / f"{name}.yml").read_text())
    # YAML 1.1 (PyYAML) reads the key `on` as True
    data["on"] = data.pop(True) if True in data else data["on"]
    return data


def _steps(job: dict) -> list[dict]:
    return job["steps"]


def _runs(job: dict) -> list[str]:
    return [s["run"] for s in _steps(job) if "run" in s]


def _uses(job: dict, action: str) -> list[dict]:
    return [s for s in _steps(job) if s.get("uses", "").split("@")[0] == action]


def _index(job: dict, predicate) -> int:
    hits = [i for i, s in enumerate(_steps(job)) if predicate(s)]
    assert hits, "no such step"
    return hits[0]


def _lock_version(name: str) -> str:
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        if line.lower().startswith(name.lower() + "=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in requirements/lock.txt")


def test_the_four_workflows_are_there():
    assert set(NAMES) <= {p.stem for p in WORKFLOWS.glob("*.yml")}


def test_workflows_are_valid_against_the_github_schema():
    run = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                          *(str(WORKFLOWS / f"{n}.yml") for n in NAMES)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("name", NAMES)
def test_every_step_is_well_formed(name):
    wf = _load(name)
    assert wf["name"] == name and wf["jobs"]
    for job_id, job in wf["jobs"].items():
        assert "runs-on" in job and job["steps"], job_id
        assert isinstance(job.get("timeout-minutes", 0), int)
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), f"{name}.{job_id}: {step}"
            if "uses" in step:   # every action at a released version, not a moving branch
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@(v\d+(\.\d+)*|release/v\d+)", step["uses"]), step["uses"]


def test_make_targets_the_workflows_call_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("test", "book", "test-gpu", "venv"):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target
    assert re.search(r"^REPO_URL \?=", makefile, re.M), "make book REPO_URL=... is how book.yml passes the URL"


def test_test_workflow_runs_make_test_on_push_and_pull_request():
    wf = _load("test")
    assert {"push", "pull_request"} <= set(wf["on"])
    assert wf["on"]["push"] is None and wf["on"]["pull_request"] is None, "every branch, every pull request"
    (job,) = wf["jobs"].values()
    assert job["runs-on"].startswith("ubuntu")
    assert job["container"].startswith("python:3.11-"), "Python 3.11 (Debian's image: its chromium is Debian's)"
    assert [r for r in _runs(job) if re.search(r"^make test$", r, re.M)]
    chromium = _index(job, lambda s: "apt-get install" in s.get("run", "") and re.search(r"\bchromium\b", s["run"]))
    make_test = _index(job, lambda s: re.search(r"^make test$", s.get("run", ""), re.M))
    assert chromium < make_test
    assert job["env"]["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


def test_book_workflow_builds_with_make_book_and_deploys_to_pages():
    wf = _load("book")
    assert wf["on"]["push"]["branches"] == ["main"] and "workflow_dispatch" in wf["on"]
    assert wf["permissions"]["pages"] == "write" and wf["permissions"]["id-token"] == "write"
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    (make_book,) = [r for r in _runs(build) if r.startswith("make book")]
    assert f'REPO_URL="{REPO_URL}"' in make_book
    (setup,) = _uses(build, "actions/setup-python")
    assert setup["with"]["python-version"] == "3.11"
    (upload,) = _uses(build, "actions/upload-pages-artifact")
    assert upload["with"]["path"] == "_build/html"
    assert _index(build, lambda s: s.get("run", "").startswith("make book")) < \
        _index(build, lambda s: s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    (dep,) = _uses(deploy, "actions/deploy-pages")
    assert deploy["environment"]["url"] == f"${{{{ steps.{dep['id']}.outputs.page_url }}}}"


def test_gpu_workflow_runs_make_test_gpu_on_a_self_hosted_gpu_runner_with_cuda_torch():
    wf = _load("gpu")
    assert "pull_request" not in wf["on"], "no pull requests from forks on a self-hosted runner"
    (job,) = wf["jobs"].values()
    assert job["runs-on"] == ["self-hosted", "gpu"]
    torch_version = _lock_version("torch")
    venv = _index(job, lambda s: s.get("run", "").strip() == "make venv")
    cuda = _index(job, lambda s: re.search(
        rf'pip install "torch=={re.escape(torch_version)}\+cu\d+" --index-url https://download\.pytorch\.org/whl/cu\d+',
        s.get("run", "")))
    gpu = _index(job, lambda s: s.get("run", "").strip() == "make test-gpu")
    assert venv < cuda < gpu
    # the CUDA build named in the step and its index agree
    step = _steps(job)[cuda]["run"]
    assert set(re.findall(r"whl/(cu\d+)", step)) == set(re.findall(r"\+(cu\d+)", step))


def test_publish_workflow_runs_only_on_version_tags_and_uses_trusted_publishing():
    wf = _load("publish")
    assert wf["on"] == {"push": {"tags": ["v*"]}}, "only a version tag publishes"
    build, publish = wf["jobs"]["build"], wf["jobs"]["publish"]
    check = _index(build, lambda s: "GITHUB_REF_NAME" in s.get("run", ""))
    built = _index(build, lambda s: s.get("run", "").strip() == "python -m build --no-isolation")
    twine = _index(build, lambda s: s.get("run", "").strip() == "python -m twine check --strict dist/*")
    upload = _index(build, lambda s: s.get("uses", "").startswith("actions/upload-artifact"))
    assert check < built < twine < upload
    tools = "\n".join(_runs(build))
    for tool in ("build", "twine", "setuptools"):   # the build tools come from the lock
        _lock_version(tool)
        assert tool in tools
    assert publish["needs"] == "build" and publish["environment"]["name"] == "pypi"
    assert publish["permissions"] == {"id-token": "write"}
    (pypi,) = _uses(publish, "pypa/gh-action-pypi-publish")
    assert "password" not in (pypi.get("with") or {}), "trusted publishing: no token"
    assert _uses(publish, "actions/download-artifact")[0]["with"]["name"] == \
        _uses(build, "actions/upload-artifact")[0]["with"]["name"]


@pytest.mark.parametrize("tag, ok", [(f"v{attn_lib.__version__}", True), ("v999.0.0", False),
                                     (attn_lib.__version__, False)])
def test_publish_tag_check_compares_the_tag_with_the_version(tag, ok):
    """Run the workflow's own step, as the runner would (bash, from the repository root)."""
    build = _load("publish")["jobs"]["build"]
    script = _steps(build)[_index(build, lambda s: "GITHUB_REF_NAME" in s.get("run", ""))]["run"]
    env = {**os.environ, "GITHUB_REF_NAME": tag,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(["bash", "-e", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert (run.returncode == 0) is ok, run.stdout + run.stderr
    if not ok:
        assert f"does not match attn_lib.__version__ {attn_lib.__version__}" in run.stderr
