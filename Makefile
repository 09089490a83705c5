# Attention, Derived: every target creates .venv/ with the pinned dependencies when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
MATHJAX := book/_static/mathjax/tex-chtml.js

.PHONY: help venv export notebooks check test test-gpu test-notebooks book notebooks-zip bench networks-record assignments grade clean

help:
	@echo "make test       everything CI runs: export/pairs in sync, unit tests, nbval on every chapter, book build"
	@echo "make check      the fast part: export/pairs in sync and the unit tests (no inductor, no notebooks)"
	@echo "make book       build the HTML book into _build/html"
	@echo "make export     write the #| export cells of book/src/*.md into attn_lib/"
	@echo "make notebooks  re-execute every chapter source into book/*.ipynb (CH=se to do one)"
	@echo "make test-notebooks  nbval on every chapter, with each chapter's time"
	@echo "make test-gpu   nbval on every chapter with CUDA required"
	@echo "make bench      speed (ours / official code, ours / timm) and peak memory of every module"
	@echo "make assignments  each chapter's student notebook, autograder zip and solutions into _build/assignments/ (CH=cbam for one)"
	@echo "make grade CH=se SUBMISSIONS=folder  grade every notebook of folder: folder/grades.csv, folder/*.feedback.txt"
	@echo "make networks-record  re-run the training grid of the networks chapter (a few minutes) into book/data/"

venv: $(STAMP)
$(STAMP): requirements/lock.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-deps -r requirements/lock.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

export: $(STAMP)
	$(PY) tools/chapters.py export

notebooks: $(STAMP) export
	$(PY) tools/chapters.py execute $(CH)

check: $(STAMP)
	$(PY) tools/chapters.py export --check
	$(PY) tools/chapters.py check-pairs
	$(PY) tools/glossary.py --check
	# code lines fit the book's column (88 characters): the library, the shared includes and
	# every code cell of the executed chapters (settings in pyproject.toml)
	$(VENV)/bin/ruff check --quiet attn_lib book/src/include book/*.ipynb
	# two workers, one thread each: on 2 cores this halves the time of thousands of small tests
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow" -p no:cacheprovider -n 2

test-notebooks: $(STAMP)
	tools/nbval_each.sh $(PY) book/*.ipynb

test: check
	# the slow tests (inductor, the training grid, otter gradings) in two workers, one thread each
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m slow -p no:cacheprovider -n 2 --durations=15 --ignore=tests/test_browser.py
	tools/nbval_each.sh $(PY) book/*.ipynb
	$(MAKE) book
	ATTN_BROWSER_REQUIRED=1 $(PY) -m pytest -q -m slow -p no:cacheprovider tests/test_browser.py

test-gpu: $(STAMP)
	$(PY) -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'make test-gpu: no CUDA device is visible to torch')"
	tools/nbval_each.sh $(PY) book/*.ipynb

# Ratios against the official code need the official-code harness and its mirrors:
# make bench HARNESS=path/to/official_harness.py (ATTN_MIRROR_ROOT says where the mirrors are).
bench: $(STAMP)
	$(PY) tools/bench.py $(if $(HARNESS),--harness $(HARNESS)) $(BENCH_ARGS)

# The networks chapter loads its training grid from book/data/networks_training.json, recorded with
# a hash of the chapter's experiment code; `make check` fails when the record is stale.
networks-record: $(STAMP)
	$(PY) tests/test_networks_experiment.py --write

$(MATHJAX): $(STAMP)
	rm -rf book/_static/mathjax
	mkdir -p book/_static
	cp -r "$$($(PY) -c 'import mathjax, os; print(os.path.join(os.path.dirname(mathjax.__file__), "static", "mathjax", "es5"))')" book/_static/mathjax

# The book's links (repository, issues, Colab and Binder buttons) come from `repository:` in
# _config.yml; `make book REPO_URL=https://github.com/owner/name [REPO_BRANCH=branch]` builds a
# fork's book with its own links. _config.yml is never edited: the build reads a copy,
# $(BOOK_CONFIG), written by tools/book.py.
REPO_URL ?=
REPO_BRANCH ?=
BOOK_CONFIG := _build/book_config.yml
NOTEBOOKS_ZIP := _build/html/_downloads/attention-derived-notebooks.zip

book: $(STAMP) $(MATHJAX)
	rm -rf _build/html _build/.doctrees
	$(PY) tools/book.py config $(BOOK_CONFIG) --url "$(REPO_URL)" --branch "$(REPO_BRANCH)"
	$(VENV)/bin/jupyter-book build . --config $(BOOK_CONFIG) --builder html -W -n --keep-going
	$(MAKE) --no-print-directory notebooks-zip
	$(MAKE) --no-print-directory assignments
	cp _build/assignments/$(STUDENT_ZIP) _build/html/_downloads/$(STUDENT_ZIP)

# Every chapter notebook of _toc.yml (the committed executed ones), linked from the index page.
notebooks-zip: $(STAMP)
	$(PY) tools/book.py zip $(NOTEBOOKS_ZIP)

# Course edition: otter-grader assignments built from the chapter sources (tools/assignments.py),
# and a zip of every student notebook; `make grade CH=se SUBMISSIONS=folder` grades a folder of
# submitted notebooks into folder/grades.csv and folder/<notebook>.feedback.txt.
STUDENT_ZIP := attention-derived-student-notebooks.zip
assignments: $(STAMP)
	$(PY) tools/assignments.py $(CH)
	$(if $(CH),,$(PY) tools/assignments.py zip _build/assignments/$(STUDENT_ZIP))

grade: $(STAMP)
	@test -n "$(CH)" -a -n "$(SUBMISSIONS)" || { echo "usage: make grade CH=<chapter> SUBMISSIONS=<folder of .ipynb>"; exit 2; }
	$(PY) tools/assignments.py grade $(CH) $(SUBMISSIONS)

clean:
	rm -rf _build book/_static/mathjax .pytest_cache
