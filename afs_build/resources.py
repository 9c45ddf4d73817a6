"""The files afs ships beside its code: JSON Schemas (``specs/``) and Jinja templates (``templates/``).

Read through :mod:`importlib.resources`, so an installed wheel finds them inside the package
(``afs_build/specs`` and ``afs_build/templates`` are links to the repository's top-level
folders, which setuptools copies into the wheel).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _folder(name: str) -> Path:
    return Path(str(resources.files("afs_build") / name))


def specs_dir() -> Path:
    """The folder of the JSON Schemas."""
    return _folder("specs")


def templates_dir() -> Path:
    """The folder of the Jinja templates."""
    return _folder("templates")


def spec_file(name: str) -> Path:
    return specs_dir() / name


def template_file(name: str) -> Path:
    return templates_dir() / name
