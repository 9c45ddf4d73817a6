"""Write the pages, the MkDocs configuration and the assets; build the HTML with MkDocs.

Chart.js and its error-bar plugin come from ``afs_build/site/js/node_modules`` (installed from
the npm registry by ``scripts/setup.sh`` with ``npm ci``, versions pinned in
``package-lock.json``) and are copied into the site, so the built site loads nothing from
outside itself. MkDocs builds into a temporary folder beside the old site, which is replaced
only when the build succeeded: a failed build leaves the last good site in place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Iterator, Optional

from ..atomic import atomic_path
from ..errors import StageError
from ..manifest import Manifest
from ..paths import Layout, SiteFiles
from ..resources import templates_dir
from . import family, inputs, reference, render, specialist

JS_FOLDER = Path(__file__).resolve().parent / "js"
# site asset name -> file in node_modules (each with its source map and licence beside it)
VENDOR = {"chart.umd.min.js": "chart.js/dist/chart.umd.min.js",
          "chartjs-chart-error-bars.umd.min.js": "chartjs-chart-error-bars/build/index.umd.min.js"}
# .txt: a .md file under docs/ would become a page
LICENCES = {"chart.js-LICENSE.txt": "chart.js/LICENSE.md",
            "chartjs-chart-error-bars-LICENSE.txt": "chartjs-chart-error-bars/LICENSE"}
OWN_ASSETS = ("afs-site.js", "afs-site.css")


def node_modules() -> Path:
    """Where the pinned npm packages are installed (``AFS_SITE_NODE_MODULES`` overrides)."""
    return Path(os.environ.get("AFS_SITE_NODE_MODULES") or JS_FOLDER / "node_modules")


def scripts() -> list[str]:
    """The site's scripts in load order: Chart.js, its plugin, then afs's own."""
    return [f"assets/vendor/{name}" for name in VENDOR] + ["assets/afs-site.js"]


def check_folders(manifest: Manifest) -> SiteFiles:
    """The site's folders, refusing a ``site.dir`` whose HTML folder would hold (and so, when
    MkDocs cleans it, delete) the build folder or the project."""
    site = SiteFiles.of(manifest)
    html, build, root = site.html.resolve(), Layout.of(manifest).build.resolve(), manifest.root.resolve()
    for what, path in (("the build folder", build), ("the manifest's folder", root)):
        if html == path or html in path.parents or (what == "the build folder" and path in html.parents):
            raise StageError(f"{manifest.file.name}: site.dir {manifest.site.dir!r} puts the built HTML in "
                             f"{html}, which overlaps {what} ({path}); expected a folder of its own "
                             f"(the default is 'site')")
    return site


def common(manifest: Manifest) -> dict:
    """What every page shows about the project."""
    return {"title": manifest.site.title, "project": manifest.project, "manifest_file": manifest.file.name,
            "manifest_digest": manifest.digest}


def specialist_page(manifest: Manifest, name: str) -> Path:
    """Write the page of specialist `name` (and copy its screenshots beside it)."""
    site = check_folders(manifest)
    page = site.specialist_page(name)
    text = render.render("specialist.md.j2", page=specialist.context(manifest, name), **common(manifest))
    render.write(page, text)
    return page


def family_pages(manifest: Manifest) -> list[Path]:
    """Write the family's pages, the configuration and the assets; remove pages of specialists
    the manifest no longer has."""
    from ..deploy.server import status

    site = check_folders(manifest)
    layout = Layout.of(manifest)
    states = {row["specialist"]: row["state"] for row in status(layout, manifest)}
    shared = common(manifest)
    pages = {
        "index": render.render("index.md.j2", home=family.home(manifest, states), **shared),
        "dashboard": render.render("dashboard.md.j2", dash=family.dashboard(manifest), **shared),
        "costs": render.render("costs.md.j2", costs=family.costs(manifest), **shared),
        "lineage": render.render("lineage.md.j2", lineage=family.lineage(manifest), **shared),
        "reference": render.render("reference.md.j2", ref=reference.context(), **shared),
    }
    written = []
    for name, text in pages.items():
        render.write(site.page(name), text)
        written.append(site.page(name))
    _remove_stale(site, manifest)
    _copy_reports(manifest, site)
    write_assets(site)
    render.write(site.config, render.render(
        "mkdocs.yml.j2", title=manifest.site.title, url=manifest.site.url,
        instant=manifest.site.instant_navigation, scripts=scripts(), manifest_file=manifest.file.name,
        specialists=list(manifest.specialists.values())))
    return written


def _remove_stale(site: SiteFiles, manifest: Manifest) -> None:
    folder = site.docs / "specialists"
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        name = path.stem if path.suffix == ".md" else path.name
        if name not in manifest.specialists:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def _copy_reports(manifest: Manifest, site: SiteFiles) -> None:
    """The build's reports (``build/reports/``), published as they are under ``reports/``."""
    target = site.docs / "reports"
    if target.exists():
        shutil.rmtree(target)
    for rel, path in inputs.reports(manifest):
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / rel)


def write_assets(site: SiteFiles) -> None:
    """afs's own script and style, and the pinned Chart.js files with their maps and licences."""
    modules = node_modules()
    wanted = {site.assets / name: templates_dir() / "site" / name for name in OWN_ASSETS}
    for name, rel in VENDOR.items():
        wanted[site.assets / "vendor" / name] = modules / rel
        wanted[site.assets / "vendor" / f"{name}.map"] = modules / f"{rel}.map"
    wanted.update({site.assets / "vendor" / name: modules / rel for name, rel in LICENCES.items()})
    # Browsers ask for /favicon.ico on pages that name no icon (the evaluation's own reports):
    # the theme's icon there keeps that request from failing. Chromium reads a PNG named .ico.
    wanted[site.docs / "favicon.ico"] = _theme_icon()
    missing = [str(src) for src in wanted.values() if not src.is_file()]
    if missing:
        raise StageError(f"the site's chart library is not installed ({missing[0]} is missing); "
                         f"install the pinned versions with: npm ci --prefix {JS_FOLDER} "
                         f"(scripts/setup.sh does this)")
    for target, source in wanted.items():
        data = source.read_bytes()
        if target.exists() and target.read_bytes() == data:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)


def _theme_icon() -> Path:
    from importlib.resources import files

    return Path(str(files("material") / "templates" / "assets" / "images" / "favicon.png"))


class _Collect(logging.Handler):
    """MkDocs' warnings, kept to explain a failed strict build."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _mkdocs_logging() -> Iterator[_Collect]:
    collect = _Collect()
    logger = logging.getLogger("mkdocs")
    logger.addHandler(collect)
    old, logger.propagate = logger.propagate, False  # no MkDocs INFO lines on doit's console
    try:
        yield collect
    finally:
        logger.removeHandler(collect)
        logger.propagate = old


def html(manifest: Manifest) -> Path:
    """Build the HTML from the written pages with MkDocs (strict: a broken link fails it)."""
    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")  # Material's notice about MkDocs 2.0
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import MkDocsException

    site = check_folders(manifest)
    fresh = site.folder / ".build.tmp"
    old = site.folder / ".build.old"
    for leftover in (fresh, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    with _mkdocs_logging() as collect:
        try:
            config = load_config(config_file=str(site.config), site_dir=str(fresh), strict=True)
            build(config)
        except (MkDocsException, SystemExit) as err:
            shutil.rmtree(fresh, ignore_errors=True)
            detail = "; ".join(collect.messages[:5]) or str(err)
            raise StageError(f"MkDocs could not build the site from {site.config}: {detail}") from None
    if site.html.exists():
        site.html.rename(old)
    fresh.rename(site.html)
    shutil.rmtree(old, ignore_errors=True)
    return site.html


def build_site(manifest: Manifest, names: Optional[list[str]] = None) -> Path:
    """Every page from what the build folder holds now, then the HTML (``afs site``)."""
    for name in names if names is not None else list(manifest.specialists):
        specialist_page(manifest, name)
    family_pages(manifest)
    return html(manifest)


def pages_and_targets(manifest: Manifest) -> list[Path]:
    """The HTML files the family task makes (its doit targets)."""
    site = SiteFiles.of(manifest)
    return [site.html_of(p) for p in inputs.pages(manifest)]
