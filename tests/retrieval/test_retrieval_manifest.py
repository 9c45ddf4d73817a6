"""The retrieval section is validated like the rest: positions, suggestions, cross checks."""

from __future__ import annotations

import pytest
import yaml

from afs_build.errors import ManifestError
from afs_build.manifest import load
from conftest import REPO, at


def manifest_with(project, minimal, retrieval, spec_retrieval=None, files=None):
    minimal["sources"]["code"] = {"kind": "codebase", "path": "src"}
    minimal["retrieval"] = retrieval
    if spec_retrieval is not None:
        minimal["specialists"]["alpha"]["retrieval"] = spec_retrieval
    (project.root / "src").mkdir(exist_ok=True)
    return project.write(minimal, files)


def problems(path):
    with pytest.raises(ManifestError) as err:
        load(path)
    return err.value.render().splitlines()


def test_defaults_are_filled_and_built_into_frozen_dataclasses(project, minimal):
    path = manifest_with(project, minimal, {"indexes": {"code": {"sources": ["code"]}}},
                         {"index": "code", "train_context": True})
    manifest = load(path)
    index = manifest.retrieval.indexes["code"]
    assert index.sources == ("code",) and index.include == ("**/*",) and index.questions is None
    assert (index.embedding.path, index.embedding.gguf, index.embedding.max_tokens) == (None, None, 256)
    assert (index.chunking.code_max_lines, index.search.mode, index.search.rrf_k) == (40, "hybrid", 60.0)
    spec = manifest.specialists["alpha"].retrieval
    assert (spec.index, spec.top_k, spec.context_chars, spec.train_context, spec.cite) == ("code", 3, 300, True, False)
    assert manifest.specialists["beta"].retrieval is None


def test_unknown_keys_are_positioned_errors_with_suggestions(project, minimal):
    path = manifest_with(project, minimal, {"indexes": {"code": {"sources": ["code"], "chunkng": {}}}},
                         {"index": "code", "topk": 2})
    assert problems(path) == [
        f"{at(path, 'topk')}: specialists.alpha.retrieval.topk: unknown key 'topk'; expected one of: "
        "'cite', 'context_chars', 'index', 'min_similarity', 'top_k', 'train_context' (did you mean 'top_k'?)",
        f"{at(path, 'chunkng')}: retrieval.indexes.code.chunkng: unknown key 'chunkng'; expected one of: "
        "'chunking', 'description', 'embedding', 'exclude', 'include', 'max_file_kb', 'paths', "
        "'questions', 'respect_gitignore', 'search', 'sources' (did you mean 'chunking'?)"]


def test_names_kinds_files_and_settings_are_cross_checked(project, minimal):
    path = manifest_with(project, minimal, {"indexes": {
        "code": {"sources": ["cod", "chat"], "paths": ["missing-folder"], "questions": "q.jsonl",
                 "embedding": {"path": "m", "gguf": "m.gguf"},
                 "chunking": {"code_max_lines": 10, "code_overlap_lines": 10}},
        "empty": {}}}, {"index": "cdoe"})
    found = problems(path)
    assert [line.split(": ", 1)[1] for line in found] == [
        "specialists.alpha.retrieval.index: unknown index 'cdoe'; expected one of: 'code', 'empty' "
        "(did you mean 'code'?)",
        "retrieval.indexes.code.sources[0]: unknown source 'cod'; expected one of: 'chat', 'code' "
        "(did you mean 'code'?)",
        "retrieval.indexes.code.sources[1]: source 'chat' is a custom source; an index reads codebase "
        "and synthetic sources: name the file in 'paths' instead",
        f"retrieval.indexes.code.paths[0]: not found: missing-folder (looked in {project.root}); "
        "expected a file or folder, relative to the manifest's folder",
        "retrieval.indexes.code.questions: file not found: q.jsonl; expected a JSONL file of retrieval "
        "questions, relative to the manifest's folder",
        "retrieval.indexes.code.embedding: expected at most one of 'path' (a model folder) or 'gguf' "
        "(a GGUF file); got both",
        "retrieval.indexes.code.chunking.code_overlap_lines: code_overlap_lines 10 must be less than "
        "code_max_lines 10; expected a smaller overlap",
        "retrieval.indexes.empty: an index needs something to read: name sources (codebase or "
        "synthetic) in 'sources', or files and folders in 'paths'"]
    assert found[0].startswith(at(path, "cdoe") + ":")
    assert found[3].startswith(at(path, "missing-folder") + ":")


def test_a_specialist_naming_an_index_needs_the_section(project, minimal):
    minimal["specialists"]["alpha"]["retrieval"] = {"index": "code"}
    path = project.write(minimal)
    assert problems(path) == [f"{at(path, 'code')}: specialists.alpha.retrieval.index: unknown index "
                              "'code'; no indexes are defined: add one under retrieval.indexes"]


def test_the_default_manifest_gives_every_trained_specialist_an_index():
    manifest = load(REPO / "afs.yaml")
    index = manifest.retrieval.indexes["afs"]
    assert set(index.sources) >= {"afs-codebase", "snes-hardware"}
    assert index.questions == "data/eval/retrieval.jsonl"
    assert set(manifest.retrieval.indexes["facts"].sources) == {"snes-hardware", "asm-65816", "optimization",
                                                                "debugging"}
    majora, hylia = manifest.specialists["majora"].retrieval, manifest.specialists["hylia"].retrieval
    assert majora.index == hylia.index == "afs" and majora.train_context and hylia.train_context
    assert not hylia.cite and hylia.min_similarity == 0.3
    trained = [n for n, s in manifest.specialists.items() if s.train]
    assert [n for n, s in manifest.specialists.items() if s.retrieval] == trained
    assert all(manifest.specialists[n].retrieval.index == "facts" for n in trained if n not in ("majora", "hylia"))
    yaml.safe_load((REPO / "afs.yaml").read_text())
