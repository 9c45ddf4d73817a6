"""Cross-reference checks of the ``retrieval`` section (run by :mod:`afs_build.checks`).

Stats only, like the other checks: names resolve, files and folders exist, settings agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ..errors import Problem, one_of, suggest
from ..yamlload import Positions

INDEXABLE = ("codebase", "synthetic")


def retrieval_problems(data: dict, pos: Positions, root: Path) -> Iterator[Problem]:
    indexes = data["retrieval"]["indexes"]
    for name, index in indexes.items():
        here = ("retrieval", "indexes", name)
        if not index["sources"] and not index["paths"]:
            yield pos.problem(here, "an index needs something to read: name sources (codebase or "
                              "synthetic) in 'sources', or files and folders in 'paths'")
        for i, source in enumerate(index["sources"]):
            where = here + ("sources", i)
            if source not in data["sources"]:
                yield pos.problem(where, f"unknown source {source!r}; expected one of: "
                                  f"{one_of(data['sources'])}{suggest(source, data['sources'])}"
                                  if data["sources"] else f"unknown source {source!r}; no sources are defined")
            elif data["sources"][source]["kind"] not in INDEXABLE:
                kind = data["sources"][source]["kind"]
                yield pos.problem(where, f"source {source!r} is a {kind} source; an index reads "
                                  f"{' and '.join(INDEXABLE)} sources: name the file in 'paths' instead")
        for i, rel in enumerate(index["paths"]):
            if not (root / Path(rel).expanduser()).exists():
                yield pos.problem(here + ("paths", i), f"not found: {rel} (looked in {root}); expected "
                                  "a file or folder, relative to the manifest's folder")
        if index["questions"] and not (root / Path(index["questions"]).expanduser()).is_file():
            yield pos.problem(here + ("questions",), f"file not found: {index['questions']}; expected "
                              "a JSONL file of retrieval questions, relative to the manifest's folder")
        yield from _embedding(index["embedding"], pos, root, here + ("embedding",))
        chunking = index["chunking"]
        for size, overlap in (("code_max_lines", "code_overlap_lines"), ("prose_max_chars", "prose_overlap_chars")):
            if chunking[overlap] >= chunking[size]:
                yield pos.problem(here + ("chunking", overlap), f"{overlap} {chunking[overlap]} must be "
                                  f"less than {size} {chunking[size]}; expected a smaller overlap")
    for name, spec in data["specialists"].items():
        wanted = spec.get("retrieval")
        if isinstance(wanted, dict) and wanted.get("index") not in indexes:
            index = wanted.get("index")
            hint = (f"expected one of: {one_of(indexes)}{suggest(index, indexes)}" if indexes else
                    "no indexes are defined: add one under retrieval.indexes")
            yield pos.problem(("specialists", name, "retrieval", "index"), f"unknown index {index!r}; {hint}")


def _embedding(settings: dict, pos: Positions, root: Path, here: tuple) -> Iterator[Problem]:
    if settings["path"] and settings["gguf"]:
        yield pos.problem(here, "expected at most one of 'path' (a model folder) or 'gguf' (a "
                          "GGUF file); got both")
        return
    if settings["path"]:
        folder = root / Path(settings["path"]).expanduser()
        if not (folder / "config.json").is_file():
            yield pos.problem(here + ("path",), f"no model folder at {settings['path']} (no "
                              "config.json there); expected a sentence-transformers or Hugging "
                              "Face model folder, relative to the manifest")
    if settings["gguf"] and not (root / Path(settings["gguf"]).expanduser()).is_file():
        yield pos.problem(here + ("gguf",), f"file not found: {settings['gguf']}; expected a GGUF "
                          "embedding model, relative to the manifest")
