"""Which build files each page reads, and reading them so that a missing one is no error.

The lists are the ``site`` tasks' ``file_dep``: the small JSON sidecars each stage writes last
(never weights, never a big JSONL that a sidecar already stands for: a mix's ``rejects.jsonl``
changes only with its ``stats.json``, a training's ``metrics.jsonl`` with its
``training_summary.json``). Each listed file is a target of a task that this manifest's graph
has, so ``doit site`` first brings what the site shows up to date, and a file that changes
rebuilds the pages that show it and nothing else. The lists depend on the manifest only, never
on what exists now: doit reruns a task whose ``file_dep`` list changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional

from ..errors import StageError
from ..manifest import Manifest
from ..paths import Layout, SiteFiles
from ..resources import spec_file, templates_dir
from ..uptodate import code_files

# The templates and assets a page is made from (templates/site/); tests check this list
# against the folder, so planning never lists folders.
TEMPLATES = ("macros.md.j2", "index.md.j2", "specialist.md.j2", "dashboard.md.j2", "costs.md.j2",
             "lineage.md.j2", "reference.md.j2", "mkdocs.yml.j2", "afs-site.js", "afs-site.css")
MODULES = ("site/inputs.py", "site/specialist.py", "site/family.py", "site/charts.py",
           "site/reference.py", "site/results.py", "site/render.py", "site/build.py", "site/formats.py",
           "site/versus.py", "stages/site.py")
SCHEMAS = ("manifest.schema.json", "question.schema.json", "result.schema.json",
           "sample.schema.json")


def code() -> list[str]:
    """The site's own code and templates: editing them rebuilds the pages."""
    folder = templates_dir() / "site"
    return code_files(*MODULES) + [str(folder / name) for name in TEMPLATES]


def specialist_inputs(manifest: Manifest, name: str) -> list[Path]:
    """The build files the page of specialist `name` shows."""
    layout = Layout.of(manifest)
    spec = manifest.specialists[name]
    post = layout.post(name)
    # Not deploy.json: what the page quotes of it follows the manifest slice (site tasks have
    # their own), and a task that file_deps it would make doit restart stopped servers first.
    files = [post.gguf_report, post.quantize_report]
    if spec.train:
        files += [layout.mix(name).stats, layout.train(name).summary, post.merge_report]
        for source in manifest.mixes[spec.mix].sources:
            files += [layout.ingest(source).meta, layout.score(source).meta]
    if manifest.eval.suite:
        files += [manifest.resolve(manifest.eval.suite), layout.eval(name).results,
                  layout.eval(name).summary]
        if spec.train:
            compare = layout.compare(name)
            files += [compare.report, compare.base_results, compare.quant_results]
        if spec.retrieval:
            files.append(layout.eval(name).retrieval_effect)
    if spec.retrieval:
        files += index_inputs(manifest, spec.retrieval.index)
    return _unique(files)


def optional_inputs(manifest: Manifest, name: Optional[str] = None) -> list[Path]:
    """What a page shows when it is there: the screenshots' comparison and the evaluation's
    reports of specialist `name` (or of every model and the family, with no name). Written by
    screenshots:family, scorecard:family and judge:family, which a build may not have run yet,
    so they are followed by content (an uptodate check), not required as file_deps."""
    layout = Layout.of(manifest)
    if not manifest.eval.suite:
        return []
    names = [name] if name else list(manifest.specialists)
    files = [p for n in names for p in (layout.screenshots(n).report, layout.model_report(n).json)]
    if name is None:
        files += [layout.family_eval_report.json, layout.judge().report]
    return files


def index_inputs(manifest: Manifest, name: str) -> list[Path]:
    """An index's sidecar, and its measured quality where it has questions."""
    files = Layout.of(manifest).index(name)
    return [files.report] + ([files.quality] if manifest.retrieval.indexes[name].questions else [])


def family_inputs(manifest: Manifest) -> list[Path]:
    """The build files the family pages show: every specialist's, the bases', the family report
    and the schemas the reference is generated from."""
    layout = Layout.of(manifest)
    files: list[Path] = []
    for name in manifest.specialists:
        files += specialist_inputs(manifest, name)
    files += [layout.base(m).report for m in dict.fromkeys(s.base for s in manifest.specialists.values())]
    for name in manifest.retrieval.indexes:
        files += index_inputs(manifest, name)
    if manifest.eval.suite and manifest.trained:
        files.append(layout.family_report)
    files += [spec_file(name) for name in SCHEMAS]
    return _unique(files)


def lock_file() -> Path:
    """The npm lock file pinning Chart.js: a new version rebuilds the site."""
    return Path(__file__).resolve().parent / "js" / "package-lock.json"


def pages(manifest: Manifest) -> list[Path]:
    """Every Markdown page of the site, the family's first."""
    site = SiteFiles.of(manifest)
    return [site.page(p) for p in FAMILY_PAGES] + [site.specialist_page(n) for n in manifest.specialists]


FAMILY_PAGES = ("index", "dashboard", "costs", "lineage", "reference")


def _unique(paths: list[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))


# --- reading ----------------------------------------------------------------------------------


def read_json(path: Path) -> Optional[Any]:
    """The JSON in `path`, or None when the file does not exist (yet)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StageError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise StageError(f"{path}: not valid JSON ({err}); the stage that writes it rewrites it "
                         f"when its task runs again (doit forget <task>; doit)") from None


def read_jsonl(path: Path, limit: Optional[int] = None) -> Optional[list]:
    """The records of a JSONL file (at most `limit`), or None when it does not exist."""
    if not Path(path).exists():
        return None
    return list(_records(path, limit))


def _records(path: Path, limit: Optional[int]) -> Iterator[Any]:
    from ..data.jsonl import JsonlError, read_jsonl as stream

    try:
        for count, record in enumerate(stream(path)):
            if limit is not None and count >= limit:
                return
            yield record
    except JsonlError as err:
        raise StageError(f"{err}; the stage that writes it rewrites it when its task runs "
                         f"again") from None


def reports(manifest: Manifest) -> list[tuple[str, Path]]:
    """The build's reports (``build/reports/``, subfolders too: the evaluation writes one folder
    per model) as ``(path inside the folder, file)``, the way the site publishes them. Markdown
    reports are left out: under ``docs/`` they would become pages; their HTML twins are kept."""
    folder = Layout.of(manifest).family_report.parent
    if not folder.is_dir():
        return []
    return [(p.relative_to(folder).as_posix(), p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix != ".md" and not p.name.startswith(".")]


def relative(manifest: Manifest, path: Optional[str | Path]) -> Optional[str]:
    """`path` relative to the manifest's folder where it lies below it (pages name files the
    way a user types them), else as it is."""
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(manifest.root.resolve()).as_posix()
    except ValueError:
        return str(path)
