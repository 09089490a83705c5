"""Sphinx 7.4 writes every inline script that an extension adds during the build twice (once as
`_JavaScript(None)`, once as `_JavaScript('')`, which do not compare equal), so sphinx-thebe's
`const THEBE_JS_URL = ...` is declared twice and every page logs a SyntaxError. This extension
drops the second copy of each inline script from the page context. Loaded by `_config.yml`
(`sphinx: local_extensions`)."""

from __future__ import annotations


def _dedupe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        body = getattr(js, "attributes", {}).get("body")
        if not getattr(js, "filename", None) and body is not None:
            key = (body, tuple(sorted((k, v) for k, v in js.attributes.items() if k != "priority")))
            if key in seen:
                continue
            seen.add(key)
        kept.append(js)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _dedupe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
