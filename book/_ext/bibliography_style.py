"""The book's bibliography style: the list's labels are the same author-year labels as the
citations in the text ([Hu et al., 2018] in both), entries are sorted by author and year, and
each entry ends with its links: the DOI, the arXiv preprint (or the paper's page), and the official code (a `code`
field holding the repository's URL). Loaded by `_config.yml` (`sphinx: local_extensions`) and
selected by `bibtex_default_style: attention_derived`."""

from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from pybtex.style.template import field, href, join, optional, sentence


def _surname(person) -> str:
    return " ".join(person.prelast_names + person.last_names)


class AuthorYearLabelStyle(BaseLabelStyle):
    """"Hu et al., 2018", "Roy et al., 2019", "Rogozhnikov, 2022": what sphinxcontrib-bibtex's
    author_year citations print. Two entries with one label get "a", "b" after the year."""

    def format_labels(self, sorted_entries):
        labels = []
        for entry in sorted_entries:
            persons = entry.persons.get("author") or entry.persons.get("editor") or []
            if not persons:
                names = entry.fields.get("title", entry.key)
            elif len(persons) == 1:
                names = _surname(persons[0])
            elif len(persons) == 2:
                names = f"{_surname(persons[0])} and {_surname(persons[1])}"
            else:
                names = f"{_surname(persons[0])} et al."
            labels.append(f"{names}, {entry.fields.get('year', 'n.d.')}")
        counts, seen = Counter(labels), Counter()
        for label in labels:
            if counts[label] > 1:
                seen[label] += 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            else:
                yield label


class AttentionDerivedStyle(UnsrtStyle):
    default_label_style = "author_year_label"
    default_sorting_style = "author_year_title"

    def format_code(self, e):
        return join["Official code: ", href[field("code", raw=True)][field("code", raw=True)]]

    def format_web_refs(self, e):
        return sentence[
            optional[self.format_doi(e)],
            optional[self.format_eprint(e)],
            optional[join["Online: ", href[field("url", raw=True)][field("url", raw=True)]]],
            optional[self.format_code(e)],
        ]


def setup(app):
    register_plugin("pybtex.style.labels", "author_year_label", AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", "attention_derived", AttentionDerivedStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
