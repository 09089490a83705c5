"""Two steps of `make book` that are easier to read as Python than as Make.

    python tools/book.py config OUT [--url URL] [--branch BRANCH]
        writes OUT, a copy of _config.yml with the repository URL and branch replaced when given
        (a fork's build: the publishing workflow passes its own repository), and with the
        sphinx.local_extensions paths made absolute (jupyter-book resolves them from the folder
        of the config file it is given). _config.yml itself is never edited.
    python tools/book.py zip OUT
        writes OUT, a zip of every chapter notebook that _toc.yml lists (the committed executed
        notebooks), each under attention-derived-notebooks/.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def write_config(out: Path, url: str = "", branch: str = "") -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repository = config.setdefault("repository", {})
    if url:
        repository["url"] = url.rstrip("/")
    if branch:
        repository["branch"] = branch
    extensions = (config.get("sphinx") or {}).get("local_extensions") or {}
    for name, path in extensions.items():
        extensions[name] = str((ROOT / path).resolve())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=False))


def chapter_notebooks() -> list[Path]:
    """The notebook of every chapter _toc.yml lists; a page written as Markdown (the notation
    page, book/notation.md, which tools/glossary.py writes) has none."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [entry["file"] for part in toc["parts"] for entry in part["chapters"]]
    return [ROOT / (f + ".ipynb") for f in files if not (ROOT / (f + ".md")).is_file()]


def write_zip(out: Path) -> int:
    notebooks = chapter_notebooks()
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for notebook in notebooks:
            archive.write(notebook, f"attention-derived-notebooks/{notebook.name}")
    return len(notebooks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config")
    config.add_argument("out", type=Path)
    config.add_argument("--url", default="")
    config.add_argument("--branch", default="")
    archive = sub.add_parser("zip")
    archive.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "config":
        write_config(args.out, args.url, args.branch)
    else:
        print(f"{args.out}: {write_zip(args.out)} notebooks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
