"""Turn the build folder into the family's site (site:<specialist>, site:family).

``site:<specialist>`` writes the specialist's Markdown page from its stages' sidecars;
``site:family`` writes the family pages (home, comparison, costs, lineage, manifest
reference), the MkDocs configuration and the assets, and builds the HTML with MkDocs. Each
task depends on the small JSON sidecars it shows (never on weights), so a changed evaluation
rebuilds the pages that show it and no model, and an unchanged build folder rebuilds nothing.
``afs site`` builds the same pages from whatever the build folder holds, without running
anything upstream first.
"""

from __future__ import annotations

from typing import Iterator

from ..manifest import Manifest
from ..paths import Layout, SiteFiles
from ..uptodate import SliceChanged, TreeChanged
from .common import action, task

NAME = "site"
FAMILY = "family"


def specialist_slice(manifest: Manifest, name: str) -> dict:
    """What a specialist's page reads from the manifest: its entry, mix and hardware, the
    serving and evaluation settings it quotes, the site's title."""
    spec = manifest.specialists[name]
    return {"specialist": spec, "mix": manifest.mixes[spec.mix] if spec.mix else None,
            "hardware": manifest.hardware[spec.hardware] if spec.hardware else None,
            "model": manifest.models[spec.base], "deploy": manifest.deploy, "eval": manifest.eval,
            "site": manifest.site, "file": manifest.file.name}


def family_slice(manifest: Manifest) -> dict:
    """What the family pages read: the specialists, models, mixes and hardware (costs), the
    project, serving, evaluation and site settings, and the manifest's digest (shown)."""
    return {"project": manifest.project, "models": manifest.models, "hardware": manifest.hardware,
            "mixes": manifest.mixes, "specialists": manifest.specialists, "deploy": manifest.deploy,
            "eval": manifest.eval, "site": manifest.site, "file": manifest.file.name,
            "digest": manifest.digest}


def tasks(manifest: Manifest) -> Iterator[dict]:
    from ..site import inputs

    site = SiteFiles.of(manifest)
    code = inputs.code()
    for spec in manifest.specialists.values():
        yield task(f"{NAME}:{spec.name}", f"Write the site's page of {spec.title}.", run_specialist,
                   manifest, spec.name, file_dep=inputs.specialist_inputs(manifest, spec.name) + code,
                   targets=[site.specialist_page(spec.name)],
                   uptodate=[SliceChanged(f"site ({spec.name})", specialist_slice(manifest, spec.name)),
                             present(manifest, inputs.optional_inputs(manifest, spec.name))])
    pages = inputs.pages(manifest)
    family_pages = [site.page(p) for p in inputs.FAMILY_PAGES]
    specialist_pages = [site.specialist_page(n) for n in manifest.specialists]
    yield task(f"{NAME}:{FAMILY}", "Write the family's pages and build the site's HTML with MkDocs.",
               run_family, manifest, FAMILY,
               file_dep=inputs.family_inputs(manifest) + specialist_pages + code + [inputs.lock_file()],
               targets=family_pages + [site.config] + [site.html_of(p) for p in pages],
               uptodate=[SliceChanged("site (family)", family_slice(manifest)),
                         present(manifest, inputs.optional_inputs(manifest))])


def present(manifest: Manifest, files: list) -> TreeChanged:
    """Up to date while those of `files` that exist are unchanged (one appearing rebuilds)."""
    return TreeChanged("optional inputs", lambda: [p for p in files if p.is_file()], Layout.of(manifest).build)


@action(NAME)
def run_specialist(manifest: Manifest, name: str) -> None:
    from .. import log
    from ..site import build

    with log.step(f"{NAME}:{name}", "writing the page", specialist=name):
        build.specialist_page(manifest, name)


@action(NAME)
def run_family(manifest: Manifest, name: str) -> None:
    from .. import log
    from ..site import build

    task_name = f"{NAME}:{name}"
    with log.step(task_name, "writing the family pages"):
        build.family_pages(manifest)
    with log.step(task_name, "building the HTML with MkDocs") as extra:
        folder = build.html(manifest)
        extra.update(site=str(folder))
    log.event(f"site built: {folder / 'index.html'} (serve it with: afs site --serve)", task=task_name)
