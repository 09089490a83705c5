"""The built book in a real browser: every page of _build/html (after `make book`) opened in
headless Chromium (Debian's `chromium`, driven by Playwright with the system browser: no browser
download) at desktop and phone widths. On every page: every math element typeset by MathJax with
no MathJax error, no console error, no uncaught exception, no local file that fails to load and
no request to the network (the book is served offline). On every chapter: the repository,
issues, Colab and Binder buttons with the configured repository URL, and a download button whose
.ipynb is the committed notebook. On every page with sphinx-exercise directives: each exercise is
linkable and has its solution, each solution is hidden by default and its toggle shows and hides
it. The chapter-notebook zip that `make book` writes is checked against _toc.yml.

The exercise checks run on a small book built in a temporary folder too, with a broken variant of
each thing they look for, so that they are known to fail, not only to pass.

Skipped with a message when _build/html or the browser is missing; `make test` sets
ATTN_BROWSER_REQUIRED=1, which turns those skips into failures. ATTN_BOOK_HTML points at another
build, ATTN_CHROMIUM at another browser binary."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
HTML = Path(os.environ.get("ATTN_BOOK_HTML", ROOT / "_build" / "html")).resolve()
CHROMIUM = os.environ.get("ATTN_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("ATTN_BROWSER_REQUIRED") == "1"
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
ZIP_NAME = "attention-derived-notebooks.zip"
SKIP_DIRS = {"_static", "_sources", "_images", "_downloads"}
COLAB = "https://colab.research.google.com"
BINDER = "https://mybinder.org"


def _unavailable(message: str):
    if REQUIRED:
        pytest.fail(message)
    pytest.skip(message)


def _need_book():
    if not (HTML / "book" / "index.html").is_file():
        _unavailable(f"no built book in {HTML}: run `make book` first (`make test` does)")


def _config() -> dict:
    """The configuration the book was built with: `make book` writes the copy it builds from
    (with REPO_URL/REPO_BRANCH applied) next to the HTML; otherwise _config.yml."""
    built = HTML.parent / "book_config.yml"
    return yaml.safe_load((built if built.is_file() else ROOT / "_config.yml").read_text())


def _chapters() -> list[str]:
    """The chapters of _toc.yml that are notebooks (not the Markdown notation page)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [entry["file"] for part in toc["parts"] for entry in part["chapters"]]
    return [f for f in files if not (ROOT / f"{f}.md").is_file()]


def _pages(html: Path) -> list[Path]:
    return sorted(p for p in html.rglob("*.html")
                  if not SKIP_DIRS.intersection(p.relative_to(html).parts))


def expected_links(config: dict, docname: str) -> dict[str, str]:
    """The links sphinx-book-theme builds from `repository:` and `launch_buttons:` for a page
    whose source is the notebook <docname>.ipynb."""
    repo = config["repository"]
    url, branch = repo["url"].rstrip("/"), repo.get("branch", "main")
    org, name = urlsplit(url).path.strip("/").split("/")[:2]
    prefix = (repo.get("path_to_book") or "").strip("/")
    path = f"{prefix + '/' if prefix else ''}{docname}.ipynb"
    return {
        "repository": url,
        "issues": f"{url}/issues/new",
        "colab": f"{COLAB}/github/{org}/{name}/blob/{branch}/{path}",
        "binder": f"{BINDER}/v2/gh/{org}/{name}/{branch}?urlpath=tree/{path}",
    }


# ---------------------------------------------------------------- the browser -----------------

@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no browser at {CHROMIUM}: `apt-get install -y chromium` (or set ATTN_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (it is in requirements/lock.txt: `make venv`)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Tab:
    """One page per viewport, reused for every URL; records what goes wrong while it loads."""

    def __init__(self, browser, viewport):
        self.context = browser.new_context(viewport=viewport)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"uncaught exception: {e}"))
        self.page.on("requestfailed", lambda r: r.url.startswith("file:") and self.problems.append(
            f"failed to load {r.url}: {r.failure}"))

    def _route(self, route):
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:", "about:")):
            route.continue_()
        else:
            self.problems.append(f"requests the network: {url}")
            route.abort()

    def open(self, path: Path) -> list[str]:
        self.problems = []
        self.page.goto(path.as_uri(), wait_until="load")
        has_mathjax = self.page.evaluate("() => !!(window.MathJax && MathJax.startup && MathJax.startup.promise)")
        if has_mathjax:
            self.page.evaluate("() => MathJax.startup.promise")
        math = self.page.evaluate("""() => {
            const bad = Array.from(document.querySelectorAll('.math'))
                .filter(e => !e.querySelector('mjx-container'))
                .map(e => e.textContent.trim().slice(0, 60));
            const errors = Array.from(document.querySelectorAll('mjx-merror'))
                .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 80));
            // the noundefined extension shows an unknown macro in red instead of an merror
            for (const item of (window.MathJax && MathJax.startup.document ? MathJax.startup.document.math : [])) {
                if (!item.root) continue;
                item.root.walkTree(node => {
                    if (node.isKind('mtext') && node.attributes.get('mathcolor') === 'red')
                        errors.push('undefined macro in ' + item.math.slice(0, 60));
                });
            }
            return {n: document.querySelectorAll('.math').length, bad, errors};
        }""")
        if math["n"] and not has_mathjax:
            self.problems.append(f"{math['n']} math elements and no MathJax")
        self.problems += [f"math not typeset: {t!r}" for t in math["bad"]]
        self.problems += [f"MathJax error: {t!r}" for t in math["errors"]]
        # one search field a reader can see (the sidebar's, or the header's icon on a phone)
        searches = self.page.evaluate("""() => Array.from(
            document.querySelectorAll('.search-button-field, .search-button'))
            .filter(e => e.offsetParent !== null && e.getBoundingClientRect().width > 0
                         && getComputedStyle(e).visibility !== 'hidden').length""")
        if searches > 1:
            self.problems.append(f"{searches} search fields on screen (one expected)")
        return self.problems

    def close(self):
        self.context.close()


def check_exercises(page) -> tuple[int, list[str]]:
    """sphinx-exercise on the open page: every exercise has an id (it is linkable) and a solution
    that links to it; every solution is a dropdown that is hidden by default, and its toggle
    button shows it and hides it again. Returns (number of solutions toggled, problems)."""
    problems = []
    ids = page.evaluate("() => Array.from(document.querySelectorAll('.exercise')).map(e => e.id)")
    problems += ["an exercise without an id (not linkable)" for i in ids if not i]
    targets = page.evaluate("""() => Array.from(document.querySelectorAll('.solution')).map(s =>
        Array.from(s.querySelectorAll('.admonition-title a[href]')).map(a => a.getAttribute('href')))""")
    here = page.url.split("#")[0].rsplit("/", 1)[-1]
    linked = {h.split("#", 1)[1] for hrefs in targets for h in hrefs
              if h.startswith("#") or h.startswith(here + "#")}
    problems += [f"exercise {i!r} has no solution" for i in ids if i and i not in linked]
    toggled = 0
    solutions = page.locator(".solution")
    for k in range(solutions.count()):
        sol = solutions.nth(k)
        body = sol.locator(":scope > .admonition-title ~ *")
        label = f"solution {k + 1} ({(sol.get_attribute('id') or '?')})"
        if body.count() == 0:
            problems.append(f"{label} is empty")
            continue
        if "dropdown" not in (sol.get_attribute("class") or "").split() or body.first.is_visible():
            problems.append(f"{label} is not hidden by default")
            continue
        button = sol.locator(".toggle-button").first
        if button.count() == 0:
            problems.append(f"{label} has no toggle button")
            continue
        button.click()
        page.wait_for_function("e => !e.classList.contains('toggle-hidden')", arg=sol.element_handle())
        shown = body.first.is_visible()
        button.click()
        page.wait_for_function("e => e.classList.contains('toggle-hidden')", arg=sol.element_handle())
        hidden = not body.first.is_visible()
        if not (shown and hidden):
            problems.append(f"{label}: the toggle does not show and hide it (shown={shown}, hidden again={hidden})")
        else:
            toggled += 1
    return toggled, problems


def check_buttons(page, config: dict, docname: str, html: Path, viewport: str) -> list[str]:
    """The chapter's header buttons: repository, issues, Colab and Binder with the configured
    URL, the launch menu on screen at this width, and a download of the committed notebook."""
    problems = []
    hrefs = page.evaluate("() => Array.from(document.querySelectorAll('.article-header-buttons a[href]'))"
                          ".map(a => a.getAttribute('href'))")
    want = expected_links(config, docname)
    for kind, url in want.items():
        ok = any(h.startswith(url) for h in hrefs) if kind == "issues" else url in hrefs
        if not ok:
            problems.append(f"no {kind} button with {url} (header links: {hrefs})")
    for menu in ("launch", "download", "source"):
        toggle = page.locator(f".dropdown-{menu}-buttons > button").first
        if toggle.count() == 0 or not toggle.is_visible():
            problems.append(f"the {menu} menu is not on screen at the {viewport} width")
    downloads = [h for h in hrefs if h.endswith(f"_sources/{docname}.ipynb")]
    if not downloads:
        problems.append(f"no .ipynb download button (header links: {hrefs})")
    for h in downloads:
        target = (html / f"{docname}.html").parent / h
        if not target.is_file():
            problems.append(f"the download {h} is missing")
        elif json.loads(target.read_text()).get("nbformat") != 4 or \
                target.read_bytes() != (ROOT / f"{docname}.ipynb").read_bytes():
            problems.append(f"the download {h} is not the committed notebook {docname}.ipynb")
    return problems


# ---------------------------------------------------------------- the built book --------------

def test_every_page_in_the_browser(browser):
    """Every built page at both widths: math, console, network, buttons, exercises."""
    _need_book()
    config = _config()
    pages = _pages(HTML)
    chapters = set(_chapters())
    assert len(pages) >= len(chapters) + 1, pages
    report, toggled = [], 0
    for viewport, size in VIEWPORTS.items():
        tab = Tab(browser, size)
        try:
            for path in pages:
                rel = path.relative_to(HTML).as_posix()
                redirect = re.search(r'http-equiv="refresh" content="0; url=([^"]+)"', path.read_text(), re.I)
                if redirect:   # the root index.html only redirects to the book's first page
                    if not (path.parent / redirect.group(1)).is_file():
                        report.append(f"{rel}: redirects to a missing page {redirect.group(1)}")
                    continue
                problems = list(tab.open(path))
                docname = rel[:-len(".html")]
                if docname in chapters:
                    problems += check_buttons(tab.page, config, docname, HTML, viewport)
                n, exercise_problems = check_exercises(tab.page)
                toggled += n
                problems += exercise_problems
                report += [f"{viewport} {rel}: {p}" for p in problems]
        finally:
            tab.close()
    assert not report, "\n".join(report)
    print(f"{len(pages)} pages x {len(VIEWPORTS)} widths, {toggled} solution toggles")


def test_chapter_pages_are_notebooks_with_launch_buttons():
    """Without a browser: every chapter is rendered from its committed .ipynb (so the launch
    buttons open it), and the configured URL is in its HTML."""
    _need_book()
    config = _config()
    for docname in _chapters():
        page = (HTML / f"{docname}.html").read_text()
        assert (HTML / "_sources" / f"{docname}.ipynb").is_file(), docname
        for kind, url in expected_links(config, docname).items():
            assert url.replace("&", "&amp;") in page or url in page, (docname, kind, url)


def test_notebooks_zip():
    """_build/html/_downloads/attention-derived-notebooks.zip holds every chapter notebook of
    _toc.yml, byte for byte, and the index page links to it."""
    _need_book()
    path = HTML / "_downloads" / ZIP_NAME
    assert path.is_file(), f"{path} is missing: `make book` writes it"
    with zipfile.ZipFile(path) as z:
        names = sorted(z.namelist())
        want = sorted(f"attention-derived-notebooks/{Path(d).name}.ipynb" for d in _chapters())
        assert names == want
        for docname in _chapters():
            data = z.read(f"attention-derived-notebooks/{Path(docname).name}.ipynb")
            assert data == (ROOT / f"{docname}.ipynb").read_bytes(), docname
    index = HTML / "book" / "index.html"
    assert f'href="../_downloads/{ZIP_NAME}"' in index.read_text()
    assert (index.parent / "../_downloads" / ZIP_NAME).resolve() == path.resolve()


STUDENT_ZIP = "attention-derived-student-notebooks.zip"


def test_student_notebooks_zip():
    """_build/html/_downloads/attention-derived-student-notebooks.zip holds the student notebook of
    every chapter with an assignment, as `make assignments` built it, and the index links to it."""
    _need_book()
    sys.path.insert(0, str(ROOT / "tools"))
    import assignments

    path = HTML / "_downloads" / STUDENT_ZIP
    assert path.is_file(), f"{path} is missing: `make book` copies it from `make assignments`"
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted(f"{Path(STUDENT_ZIP).stem}/{s}.ipynb" for s in assignments.SPECS)
        for stem in assignments.SPECS:
            text = z.read(f"{Path(STUDENT_ZIP).stem}/{stem}.ipynb").decode()
            assert "your code here" in text and "BEGIN SOLUTION" not in text, stem
    index = HTML / "book" / "index.html"
    assert f'href="../_downloads/{STUDENT_ZIP}"' in index.read_text()


def test_exercise_numbers_agree_with_the_student_notebooks():
    """The book numbers exercises within their chapter (Exercise 8.2); the student notebook of that
    chapter prompts the same numbers with the same titles."""
    _need_book()
    sys.path.insert(0, str(ROOT / "tools"))
    import assignments

    for stem in assignments.SPECS:
        html = (HTML / "book" / f"{stem}.html").read_text()
        on_page = sorted(set(re.findall(r"Exercise (\d+\.\d+)", html)), key=lambda n: int(n.split(".")[1]))
        student = ROOT / "_build" / "assignments" / stem / "student" / f"{stem}.ipynb"
        assert student.is_file(), f"{student} is missing: `make book` runs `make assignments`"
        prompts = re.findall(r"\*\*Exercise (\d+\.\d+): ", student.read_text())
        number = assignments.chapter_number(stem)
        assert on_page and all(n.startswith(f"{number}.") for n in on_page), (stem, on_page)
        assert prompts == on_page, (stem, prompts, on_page)


# ---------------------------------------------------------------- the checks can fail ---------

SMALL_BOOK_PAGE = """# Exercises

Inline math $a + b = c$ and display math:

$$ \\sum_{i=1}^{n} x_i $$

```{exercise}
:label: ex-one

Compute $a + b$.
```

```{solution} ex-one
:label: sol-one
:class: dropdown

It is $a + b$.
```

```{exercise}
:label: ex-two

Name the module.
```

```{solution} ex-two
:label: sol-two
:class: dropdown

CBAM.
```
"""


@pytest.fixture(scope="module")
def small_book(tmp_path_factory):
    """A two-page book built with the repository's jupyter-book, sphinx-exercise and MathJax copy:
    a good page, and one with an open solution, an exercise without a solution, broken TeX, a
    console error, a missing local image and a remote one."""
    try:
        import sphinx_exercise  # noqa: F401
    except ImportError:
        _unavailable("sphinx-exercise is not installed: the exercise checks are untested")
    mathjax = ROOT / "book" / "_static" / "mathjax"
    if not (mathjax / "tex-chtml.js").is_file():
        _unavailable("book/_static/mathjax is missing: `make book` copies it")
    src = tmp_path_factory.mktemp("small_book")
    # not in _static/: jupyter-book adds every .js file of a _static/ folder to each page
    shutil.copytree(mathjax, src / "assets" / "mathjax")
    shutil.copytree(ROOT / "book" / "_ext", src / "_ext")
    (src / "_config.yml").write_text(yaml.safe_dump({
        "title": "small", "execute": {"execute_notebooks": "off"},
        "parse": {"myst_enable_extensions": ["amsmath", "dollarmath", "colon_fence"]},
        "sphinx": {"extra_extensions": ["sphinx_exercise"],
                   "local_extensions": {"inline_scripts_once": "_ext/", "one_search_field": "_ext/"},
                   "config": {"mathjax_path": "mathjax/tex-chtml.js", "html_static_path": ["assets"],
                              "html_context": {"default_mode": "light"}}},
    }))
    (src / "_toc.yml").write_text("format: jb-book\nroot: index\nchapters:\n  - file: good\n  - file: bad\n")
    (src / "index.md").write_text("# Small\n\nTwo pages.\n")
    (src / "good.md").write_text(SMALL_BOOK_PAGE)
    bad = (SMALL_BOOK_PAGE.replace(":label: sol-one\n:class: dropdown\n", ":label: sol-one\n")
           .replace("```{solution} ex-two\n:label: sol-two\n:class: dropdown\n\nCBAM.\n```\n", "")
           .replace("\\sum_{i=1}^{n} x_i", "\\sum_{i=1}^{n} \\undefinedmacro x_i")
           .replace("Compute $a + b$.", "Compute $a^1^2$.")
           .replace("ex-", "bad-ex-").replace("sol-", "bad-sol-")    # labels are global
           + '\n<script>console.error("boom")</script>\n\n<img src="missing.png">\n\n'
             '<button class="search-button-field">a second search field</button>\n\n'
             '<img src="https://example.invalid/remote.png">\n')
    (src / "bad.md").write_text(bad)
    jb = Path(sys.executable).with_name("jupyter-book")
    run = subprocess.run([str(jb), "build", str(src), "--builder", "html"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return src / "_build" / "html"


def test_exercise_and_math_checks_on_a_small_book(browser, small_book):
    for viewport, size in VIEWPORTS.items():
        tab = Tab(browser, size)
        try:
            assert tab.open(small_book / "good.html") == [], viewport
            assert check_exercises(tab.page) == (2, []), viewport

            problems = tab.open(small_book / "bad.html")
            # the theme hides a .search-button-field on a phone, the injected one included
            second_search = ("2 search fields on screen",) if viewport == "desktop" else ()
            for want in ("console error: boom", "failed to load file:",
                         "requests the network: https://example.invalid/") + second_search:
                assert any(p.startswith(want) for p in problems), (want, problems)
            assert sum(p.startswith("MathJax error") for p in problems) == 2, problems
            assert any("undefined macro" in p for p in problems) and any("Double exponent" in p for p in problems), problems
            toggled, exercise_problems = check_exercises(tab.page)
            assert toggled == 0, viewport
            assert sorted(exercise_problems) == sorted([
                "exercise 'bad-ex-two' has no solution",
                "solution 1 (bad-sol-one) is not hidden by default",
            ]), exercise_problems
        finally:
            tab.close()


def test_link_checks_fail_on_another_url():
    """The button check compares with the configured URL: a build for another repository fails."""
    _need_book()
    config = _config()
    other = {**config, "repository": {**config["repository"], "url": "https://github.com/someone/else"}}
    docname = _chapters()[0]
    page = (HTML / f"{docname}.html").read_text()
    assert expected_links(other, docname)["colab"] not in page
