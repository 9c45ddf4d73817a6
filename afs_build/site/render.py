"""The pages from their templates: one Jinja environment, escaping on, undefined names an error.

Values from the build (replies, prompts, file names, reasons) reach the pages only inside HTML
blocks, through Jinja's HTML escaping: Markdown passes such blocks through untouched, so a
reply that holds ``<script>`` is shown as text and never runs. Where a value must sit in
Markdown itself (a heading), the ``md`` filter also escapes Markdown's own syntax. Chart data
is JSON in the canvas's ``data-afs-chart`` attribute, HTML-escaped like every other value: not
a ``<script>`` element, which Material's instant navigation would run as JavaScript.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..atomic import atomic_path
from ..resources import templates_dir
from .formats import FILTERS

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]#|])")


def json_text(value: Any) -> str:
    """`value` as compact JSON text, to be HTML-escaped into an attribute like any value."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def markdown_text(value: Any):
    """`value` as literal text inside Markdown: HTML-escaped, Markdown's syntax backslashed."""
    from markupsafe import Markup, escape

    text = " ".join(str(value).split())  # one line: a heading stays a heading
    return Markup(_MARKDOWN_SPECIAL.sub(r"\\\1", str(escape(text))))


@lru_cache(maxsize=1)
def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "site")),
        autoescape=jinja2.select_autoescape(enabled_extensions=("md.j2",), default_for_string=True),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True)
    env.filters.update(FILTERS)
    env.filters["json_text"] = json_text
    env.filters["md"] = markdown_text
    return env


def render(template: str, **context: Any) -> str:
    """The text of `template` (a name in templates/site/) with `context`."""
    return environment().get_template(template).render(**context)


def write(path: Path, text: str) -> None:
    """Write a page atomically (a half-written page never reaches MkDocs)."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")
