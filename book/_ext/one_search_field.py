"""One search field, the sidebar's: the theme also puts one in the page header (twice, for wide
and narrow screens), which readers saw as a duplicated search bar.

Jupyter Book 1.x builds `html_theme_options` itself (the repository, issues and launch buttons
come from `_config.yml`'s `repository:`, `html:` and `launch_buttons:`), and a
`sphinx: config: html_theme_options` entry would replace that whole dictionary, buttons
included. So this extension changes the one key after the configuration is read. Loaded by
`_config.yml` (`sphinx: local_extensions`)."""

from __future__ import annotations


def _drop_header_search(app, config):
    options = dict(config.html_theme_options or {})
    options["navbar_persistent"] = []
    config.html_theme_options = options


def setup(app):
    app.connect("config-inited", _drop_header_search)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
