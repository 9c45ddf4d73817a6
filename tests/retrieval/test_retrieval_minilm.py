"""The default embedding model: the published all-MiniLM-L6-v2, loaded offline, and dense
search that finds by meaning what shares no word with the question."""

from __future__ import annotations

import hashlib

import pytest

from afs_build import log
from afs_build.paths import Layout
from afs_build.retrieval.build import build
from afs_build.retrieval.embedding import BUILTIN_SHA256, builtin_folder
from afs_build.retrieval.search import Retriever
from retrieval_helpers import write_project


def test_the_packaged_weights_are_the_published_model():
    weights = builtin_folder() / "model.safetensors"
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    assert digest.hexdigest() == BUILTIN_SHA256
    assert (builtin_folder() / "config.json").is_file()


@pytest.fixture(scope="module")
def minilm_index(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch_module.setenv("TRANSFORMERS_OFFLINE", "1")
    root = tmp_path_factory.mktemp("minilm")
    manifest = write_project(root, index={"embedding": {}}, files={
        "code/notes.md": "# Notes\n\n## Colors\n\nThe palette holds 256 colors of 15 bits.\n\n"
                         "## Sound\n\nThe audio processor plays samples from its own RAM.\n"})
    log.setup(Layout.of(manifest).log_file)
    report = build(manifest, "code", "index:code")
    return manifest, report


@pytest.fixture(scope="module")
def monkeypatch_module():
    patcher = pytest.MonkeyPatch()
    yield patcher
    patcher.undo()


def test_the_default_model_embeds_offline(minilm_index):
    _, report = minilm_index
    assert report["model"]["name"] == "all-minilm-l6-v2" and report["model"]["dims"] == 384


def test_dense_search_finds_by_meaning(minilm_index):
    manifest, _ = minilm_index
    retriever = Retriever(manifest, "code")
    assert retriever.search("find similar documents that are almost copies", 1, "dense")[0].chunk.file == "dedup.py"
    assert retriever.search("how is music played", 1, "dense")[0].chunk.symbol == "Notes > Sound"
    assert retriever.search("replace a file safely so readers never see half of it", 1, "dense")[0].chunk.file == "atomic.py"
    # Words the question shares with no chunk: BM25 finds nothing, dense still answers.
    assert retriever.search("how is music played", 1, "lexical") == []


def test_an_off_subject_question_gets_no_chunk_above_the_similarity_floor(minilm_index):
    manifest, _ = minilm_index
    retriever = Retriever(manifest, "code")
    on_subject = retriever.search("How many colors does the palette hold?", 3, min_similarity=0.3)
    assert on_subject and on_subject[0].chunk.symbol == "Notes > Colors"
    assert all(h.dense[1] >= 0.3 for h in on_subject)
    assert len(on_subject) < len(retriever.search("How many colors does the palette hold?", 3))
    assert retriever.search("What is the capital of Japan?", 3, min_similarity=0.3) == []
    assert retriever.search("What is the capital of Japan?", 3)  # without the floor: the nearest anyway
    # Lexical search has no similarity to hold against the floor: it keeps what it finds.
    assert retriever.search("palette colors", 3, "lexical", min_similarity=0.99)
