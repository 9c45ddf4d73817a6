"""index:<name>: provenance, incremental embedding, bad input skipped with reasons, and
queries on missing or stale indexes refused with the task that rebuilds them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from afs_build import log
from afs_build.paths import Layout
from afs_build.retrieval.build import build
from afs_build.retrieval.search import RetrievalError, Retriever
from retrieval_helpers import write_project

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def built(manifest):
    log.setup(Layout.of(manifest).log_file)
    return build(manifest, "code", "index:code")


def test_every_chunk_keeps_its_provenance(tmp_path):
    manifest = write_project(tmp_path)
    report = built(manifest)
    assert report["chunks"] == 7 and report["files"] == 3 and report["skipped"] == 0
    retriever = Retriever(manifest, "code")
    hit = retriever.search("minhash_signatures", 1, "lexical")[0]
    assert (hit.chunk.source, hit.chunk.file, hit.chunk.start, hit.chunk.end, hit.chunk.symbol) == \
        ("code", "dedup.py", 6, 8, "minhash_signatures")
    row = hit.to_json()
    assert row["lexical"]["rank"] == 1 and row["dense"] is None and row["text"].startswith("def minhash")


def test_a_changed_file_re_embeds_only_its_changed_chunks(tmp_path):
    manifest = write_project(tmp_path)
    assert built(manifest)["embedded"] == 7
    again = built(manifest)
    assert (again["embedded"], again["reused"]) == (0, 7)
    path = tmp_path / "code" / "dedup.py"
    path.write_text(path.read_text().replace("return [hash(t) for t in texts]", "return [0 for t in texts]"))
    changed = built(manifest)
    assert (changed["embedded"], changed["reused"]) == (1, 6)
    lexical = Retriever(manifest, "code").search("minhash", 1, "lexical")[0]
    assert "return [0 for t in texts]" in lexical.chunk.text


def test_bad_files_are_skipped_with_a_count_and_a_reason(tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_text("def secret(): pass\n")
    manifest = write_project(tmp_path, files={
        "code/blob.bin": b"\x00\x01\x02binary",
        "code/latin.txt": "caf\xe9".encode("latin-1"),
        "code/huge.py": "x = 1\n" * 400,
        "code/empty.md": "   \n",
    }, index={"max_file_kb": 1})
    os.symlink(outside, tmp_path / "code" / "escape.py")
    os.symlink(tmp_path / "code" / "atomic.py", tmp_path / "code" / "again.py")
    report = built(manifest)
    assert report["skip_reasons"] == {
        "binary file": 1, "empty file": 1, "file too large": 1, "not UTF-8 text": 1,
        "symbolic link inside the source tree": 1, "symbolic link out of the source tree": 1}
    skipped = {json.loads(line)["file"]: json.loads(line)["reason"]
               for line in Layout.of(manifest).index("code").skipped.read_text().splitlines()}
    assert skipped["huge.py"] == "file too large: 2400 bytes, over max_file_kb=1"
    assert skipped["latin.txt"] == "not UTF-8 text: unexpected end of data at byte 3"
    assert skipped["escape.py"].startswith("symbolic link out of the source tree: to ")
    assert report["chunks"] == 7  # only the three good files


def test_a_query_on_a_missing_index_names_the_task_that_builds_it(tmp_path):
    manifest = write_project(tmp_path)
    with pytest.raises(RetrievalError) as err:
        Retriever(manifest, "code")
    assert err.value.code == "index_missing"
    assert "index 'code' has not been built" in str(err.value) and "doit index:code" in str(err.value)


def test_a_query_on_a_stale_index_names_the_changed_file_and_the_task(tmp_path):
    manifest = write_project(tmp_path)
    built(manifest)
    retriever = Retriever(manifest, "code")
    (tmp_path / "code" / "atomic.py").write_text('"""Changed."""\n')
    with pytest.raises(RetrievalError) as err:
        retriever.refresh(force=True)
    assert err.value.code == "index_stale"
    assert str(err.value) == ("index 'code' is stale: code/atomic.py changed since it was built; "
                              "rebuild it with: doit index:code (or afs build -- index:code)")
    (tmp_path / "code" / "new.py").write_text("def new(): pass\n")
    with pytest.raises(RetrievalError, match=r"code/atomic.py \(and 1 more\) changed"):
        Retriever(manifest, "code")


def test_an_index_built_with_other_settings_is_stale(tmp_path):
    built(write_project(tmp_path))
    manifest = write_project(tmp_path, index={"chunking": {"code_max_lines": 10}})
    with pytest.raises(RetrievalError, match="built with other settings than retrieval.indexes.code"):
        Retriever(manifest, "code")


def test_a_touched_but_unchanged_file_is_not_stale(tmp_path):
    manifest = write_project(tmp_path)
    built(manifest)
    os.utime(tmp_path / "code" / "atomic.py", ns=(1, 1))
    Retriever(manifest, "code").refresh(force=True)  # no error


def doit(root, *args):
    return subprocess.run([sys.executable, "-m", "doit", "-f", os.path.join(REPO, "dodo.py"), *args],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])})


def test_the_index_task_is_incremental_by_content(tmp_path):
    write_project(tmp_path)
    first = doit(tmp_path, "index:code")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "index code: 7 chunks from 3 files (7 embedded, 0 from the cache)" in first.stdout + first.stderr
    assert "-- index:code" in doit(tmp_path, "index:code").stdout  # up to date
    os.utime(tmp_path / "code" / "atomic.py", ns=(5, 5))
    assert "-- index:code" in doit(tmp_path, "index:code").stdout  # touched, same content
    (tmp_path / "code" / "atomic.py").write_text('"""Atomic writes, changed."""\n')
    third = doit(tmp_path, "index:code")
    assert third.returncode == 0 and ".  index:code" in third.stdout
    assert "6 chunks from 3 files (1 embedded, 5 from the cache)" in third.stdout + third.stderr


def _search_settings(**kw):
    from afs_build.manifest import Search

    values = dict(mode="hybrid", candidates=20, rrf_k=60.0, lexical_weight=1.0, dense_weight=1.0,
                  connectivity=4, expansion_add=8, expansion_search=8)
    return Search(**{**values, **kw})


def test_the_same_vectors_give_the_same_index_and_the_true_nearest_chunks(tmp_path):
    """A sparse HNSW graph (connectivity 4) finds other neighbours than brute force for some
    questions; the reader answers with the exact ones, and the graph file is byte-identical
    when built twice."""
    import numpy as np

    from afs_build.paths import IndexFiles
    from afs_build.retrieval import store

    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(800, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        store.write_vectors(IndexFiles(folder).vectors, vectors, _search_settings())
        store.write_chunks(IndexFiles(folder).chunks, [])
    assert IndexFiles(first).vectors.read_bytes() == IndexFiles(second).vectors.read_bytes()

    reader = store.IndexReader(IndexFiles(first), dims=32, expansion_search=8)
    stored = np.stack([reader.vectors[k] for k in range(1, 801)]).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)  # cosine of the f16 vectors stored
    questions = rng.normal(size=(300, 32)).astype(np.float32)
    truth = np.argsort(-(questions @ stored.T), axis=1, kind="stable")[:, :3] + 1
    found = np.array([[key for key, _ in reader.dense(q, 3)] for q in questions])
    approximate = np.array(reader.vectors.search(questions, 3).keys, dtype=np.int64)
    assert (approximate != truth).any(), "the graph found every true neighbour: the test proves nothing"
    assert (found == truth).all()
    reader.close()
