"""Embedding models on request: a GGUF file through llama.cpp, and the cache by content."""

from __future__ import annotations

import numpy as np

from afs_build import log
from afs_build.paths import Layout
from afs_build.retrieval.build import build
from afs_build.retrieval.embedding import EmbeddingCache
from afs_build.retrieval.search import Retriever
from afs_build.manifest import Embedding
from retrieval_helpers import write_project
from tinymodel import tiny_gguf


def test_a_gguf_embedding_model_indexes_and_searches(tmp_path):
    gguf = tiny_gguf(tmp_path / "model")
    manifest = write_project(tmp_path / "project", index={"embedding": {"gguf": str(gguf), "max_tokens": 64}})
    log.setup(Layout.of(manifest).log_file)
    report = build(manifest, "code", "index:code")
    assert report["model"]["kind"] == "gguf" and report["model"]["dims"] == 256
    retriever = Retriever(manifest, "code")
    vectors = retriever.embed_queries(["minhash signatures", "atomic writes"])
    assert vectors.shape == (2, 256) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert len(retriever.search("minhash", 3, "dense")) == 3


def test_the_cache_is_keyed_by_text_limit_and_prefix(tmp_path):
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    plain = Embedding(None, None, 32, 256, "", "", None)
    prefixed = Embedding(None, None, 32, 256, "", "passage: ", None)
    shorter = Embedding(None, None, 32, 128, "", "", None)
    keys = {EmbeddingCache.key(s, "text") for s in (plain, prefixed, shorter)}
    assert len(keys) == 3
    key = EmbeddingCache.key(plain, "text")
    cache.put([key], [np.arange(4, dtype=np.float32)])
    assert list(cache.get([key, "missing"])) == [key]
    assert cache.get([key])[key].tolist() == [0.0, 1.0, 2.0, 3.0]
