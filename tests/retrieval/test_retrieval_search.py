"""Search: BM25 through FTS5, HNSW against exact search, reciprocal rank fusion, modes."""

from __future__ import annotations

import numpy as np
import pytest

from afs_build import log
from afs_build.errors import StageError
from afs_build.manifest import Search
from afs_build.paths import IndexFiles, Layout
from afs_build.retrieval.build import build
from afs_build.retrieval.fusion import rrf
from afs_build.retrieval.search import Retriever
from afs_build.retrieval.store import IndexReader, fts_query, write_vectors
from retrieval_helpers import write_project


def test_rrf_rewards_agreement_and_keeps_a_lone_first_place():
    fused = rrf([[1, 2, 3], [2, 4, 1]], k=60)
    assert [i for i, _ in fused] == [2, 1, 4, 3]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    weighted = rrf([[1, 2], [2, 1]], k=0, weights=[3.0, 1.0])
    assert [i for i, _ in weighted] == [1, 2]


def test_fts_queries_quote_words_and_drop_stop_words():
    assert fts_query("Which file defines `minhash_signatures`?") == '"minhash" OR "signatures"'
    assert fts_query('Where is "x" OR y') == '"x" OR "y"'
    assert fts_query("which is the") == ""


def test_hnsw_finds_what_exact_search_finds(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    files = IndexFiles(tmp_path)
    write_vectors(files.vectors, vectors, Search("hybrid", 50, 60, 1, 1, 16, 128, 64))
    files.chunks.write_bytes(b"")  # not read here
    from afs_build.retrieval.store import usearch_index

    index = usearch_index().restore(str(files.vectors), view=True)
    queries = vectors[:50] + rng.normal(scale=0.3, size=(50, 32)).astype(np.float32)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10] + 1
    found = index.search(queries, 10).keys
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])
    assert recall > 0.9


def test_modes_rank_by_bm25_by_vectors_or_both(tmp_path):
    manifest = write_project(tmp_path)
    log.setup(Layout.of(manifest).log_file)
    build(manifest, "code", "index:code")
    retriever = Retriever(manifest, "code")
    lexical = retriever.search("DedupIndex add sample", 3, "lexical")
    assert lexical[0].chunk.symbol == "DedupIndex.add" or lexical[0].chunk.symbol == "DedupIndex"
    assert all(h.dense is None for h in lexical)
    # The tiny BERT's vectors mean nothing (test_retrieval_minilm.py checks what dense search finds):
    # here, every chunk is ranked, by cosine similarity, best first.
    dense = retriever.search("write_json", 10, "dense")
    assert len(dense) == 7 and all(h.lexical is None for h in dense)
    assert [h.dense[0] for h in dense] == list(range(1, 8))
    assert [h.score for h in dense] == sorted((h.score for h in dense), reverse=True)
    hybrid = retriever.search("write_json", 3, "hybrid")
    assert hybrid[0].lexical is not None and hybrid[0].dense is not None
    assert hybrid[0].score == pytest.approx(1 / (60 + hybrid[0].lexical[0]) + 1 / (60 + hybrid[0].dense[0]))
    batch = retriever.search_many(["write_json", "minhash"], 2)
    assert [h.id for h in batch[0]] == [h.id for h in retriever.search("write_json", 2)]
    with pytest.raises(StageError, match="unknown search mode 'fuzzy'"):
        retriever.search("x", 1, "fuzzy")


def test_an_index_of_other_dimensions_is_refused(tmp_path):
    manifest = write_project(tmp_path)
    log.setup(Layout.of(manifest).log_file)
    build(manifest, "code", "index:code")
    with pytest.raises(ValueError, match="not an index of 64-dimensional vectors"):
        IndexReader(Layout.of(manifest).index("code"), 64, 64)


def test_llama_cpp_still_loads_models_after_an_index_is_opened():
    """usearch's static libstdc++ once broke every later llama.cpp model load in the process
    (std::bad_cast): doit runs index, quantize and compare tasks in one process."""
    import subprocess
    import sys

    from afs_build.training.base import locate_embedded

    # The default base's vocabulary (SmolLM2's pre-tokenizer) is what hit it; the tiny test
    # model's did not.
    gguf = locate_embedded("smollm2-135m-instruct")
    # usearch first, before anything loads the shared libstdc++ (numpy does): the bad order.
    script = (
        "from afs_build.retrieval.store import usearch_index\n"
        "Index = usearch_index()\n"
        "import numpy as np\n"
        "index = Index(ndim=4)\n"
        "index.add(np.arange(4), np.eye(4, dtype=np.float32))\n"
        "index.search(np.eye(4, dtype=np.float32)[0], 2)\n"
        "from llama_cpp import Llama\n"
        f"print(len(Llama(model_path={str(gguf)!r}, vocab_only=True, verbose=False).tokenize(b'hello')))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert int(run.stdout.strip()) > 0
