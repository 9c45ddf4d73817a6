"""Benchmark retrieval: embedding throughput, index build time, query latency, ANN recall.

    python bench/retrieval.py                  # 100,000 chunks, 2 threads
    python bench/retrieval.py --chunks 20000   # a quicker run
    python bench/retrieval.py --out r.json     # also write the figures as JSON

Everything times the functions ``index:<name>`` and the search endpoint call:

- embedding: ``TransformersEmbedder.embed`` with the default all-MiniLM-L6-v2 (torch limited
  to ``--threads``) on real chunks of afs's own code and fact tables (the default index's
  inputs, cut by ``chunk_file``), at 256 tokens (the default) and 128;
- build: ``store.write_chunks`` (SQLite rows and FTS5) and ``store.write_vectors`` (the usearch
  HNSW graph, f16, connectivity 16) on ``--chunks`` synthetic chunks. Embedding 100,000 chunks
  would take hours on two cores, so their vectors are made: the real chunks' MiniLM vectors as
  cluster centres plus noise (``clustered``, the shape real embeddings have), and uniform
  random unit vectors (``uniform``, the hard case for HNSW);
- queries: ``IndexReader.dense`` (HNSW, memory-mapped), exact brute force in numpy on the same
  vectors (float32 matrix product and argpartition), ``IndexReader.lexical`` (BM25), and the
  hybrid path (both rankings, reciprocal rank fusion, chunks fetched), each over ``--queries``
  queries, p50 and p95; one query's embedding is timed alone;
- recall@10 of HNSW against the exact search, per vector set.

What shared the cores is printed with the figures (the load average before the run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYLLABLES = "ba be bi bo ku ka ri ro sa se ta te no na mi me lu la da de".split()
VOCABULARY = 20_000  # pseudo-words, drawn with Zipf's law (rank r has weight 1/r) like text


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def timed(fn, repeat):
    out = []
    for i in range(repeat):
        started = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(percentile(out, 50), 3), "p95_ms": round(percentile(out, 95), 3)}


def real_chunks():
    from afs_build.manifest import load
    from afs_build.retrieval.build import collect

    manifest = load(ROOT / "afs.yaml")
    chunks, _, _ = collect(manifest, manifest.retrieval.indexes["afs"])
    return chunks


def vocabulary(rng):
    """Pseudo-words and their Zipf weights (rank r has weight 1/r), as words are spread in text."""
    import numpy as np

    made = sorted({"".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 6)))) for _ in range(3 * VOCABULARY)})
    words = [str(w) for w in rng.permutation(made)[:VOCABULARY]]
    weights = 1.0 / np.arange(1, len(words) + 1)
    return words, weights / weights.sum()


def synthetic_chunks(n, rng, words, weights):
    """`n` function-shaped chunks whose docstrings are Zipf-distributed words."""
    import numpy as np

    from afs_build.retrieval.chunking import Chunk

    lengths = rng.integers(20, 80, size=n)
    drawn = np.searchsorted(np.cumsum(weights), rng.random(int(lengths.sum())))
    drawn = np.minimum(drawn, len(words) - 1)
    out, at = [], 0
    for i, size in enumerate(lengths):
        picked = [words[j] for j in drawn[at:at + size]]
        at += size
        name = f"{picked[0]}_{picked[1]}_{i}"
        text = f"def {name}(value):\n    \"\"\"{' '.join(picked)}.\"\"\"\n    return value\n"
        out.append(Chunk("synthetic", f"pkg/module_{i // 50}.py", 1 + 5 * (i % 50), 4 + 5 * (i % 50),
                         name, "function", "python", text))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--embed", type=int, default=256, help="real chunks to embed for throughput")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import numpy as np
    import torch

    from afs_build.manifest import Search
    from afs_build.paths import IndexFiles
    from afs_build.retrieval.embedding import TransformersEmbedder, builtin_folder
    from afs_build.retrieval.fusion import rrf
    from afs_build.retrieval.store import IndexReader, write_chunks, write_vectors

    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    load = os.getloadavg()
    rng = np.random.default_rng(0)
    result = {"chunks": args.chunks, "threads": args.threads, "cpus": os.cpu_count(),
              "load_average_before": [round(x, 2) for x in load], "affinity": sorted(os.sched_getaffinity(0))}

    # --- embedding throughput on real chunks ---------------------------------------------
    started = time.perf_counter()
    model = TransformersEmbedder(builtin_folder(), max_tokens=256, threads=args.threads)
    result["model_load_s"] = round(time.perf_counter() - started, 2)
    real = real_chunks()
    picked = [real[i] for i in rng.choice(len(real), size=min(args.embed, len(real)), replace=False)]
    texts = [c.embed_text for c in picked]
    result["embedding"] = {}
    for tokens in (256, 128):
        model.max_tokens = tokens
        model.embed(texts[:8])  # warm up
        started, cpu = time.perf_counter(), time.process_time()
        model.embed(texts, 32)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        # CPU time says what the work costs whatever else ran: chunks per CPU-second times the
        # threads is what idle cores would give (if the threads scale).
        result["embedding"][f"{tokens}_tokens"] = {
            "chunks": len(texts), "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "chunks_per_second": round(len(texts) / seconds, 1),
            "chunks_per_cpu_second": round(len(texts) / cpu, 1)}
    model.max_tokens = 256
    centres = model.embed(texts, 32)
    result["embedding"]["query_ms"] = timed(lambda i: model.embed([f"where is {picked[i % len(picked)].symbol} defined"]),
                                            min(args.queries, 50))
    result["real_chunks"] = len(real)

    # --- build and search on synthetic chunks --------------------------------------------
    search = Search("hybrid", 50, 60, 1.0, 1.0, 16, 128, 64)
    words, weights = vocabulary(rng)
    chunks = synthetic_chunks(args.chunks, rng, words, weights)
    sets = {}
    labels = rng.integers(0, len(centres), size=args.chunks)
    clustered = centres[labels] + rng.normal(scale=0.04, size=(args.chunks, centres.shape[1])).astype(np.float32)
    sets["clustered"] = clustered
    sets["uniform"] = rng.normal(size=(args.chunks, centres.shape[1])).astype(np.float32)
    for vectors in sets.values():
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    with tempfile.TemporaryDirectory() as tmp:
        files = IndexFiles(Path(tmp))
        started = time.perf_counter()
        write_chunks(files.chunks, chunks)
        result["build"] = {"sqlite_fts5_s": round(time.perf_counter() - started, 2),
                           "sqlite_bytes": files.chunks.stat().st_size}
        result["search"] = {}
        for name, vectors in sets.items():
            started = time.perf_counter()
            write_vectors(files.vectors, vectors, search)
            build_s = time.perf_counter() - started
            reader = IndexReader(files, vectors.shape[1], search.expansion_search)
            noise = rng.normal(scale=0.04, size=(args.queries, vectors.shape[1])).astype(np.float32)
            queries = vectors[rng.choice(args.chunks, size=args.queries, replace=False)] + noise
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            exact_ids = []

            def exact(i):
                scores = vectors @ queries[i]
                top = np.argpartition(-scores, 10)[:10]
                exact_ids.append(set((top[np.argsort(-scores[top])] + 1).tolist()))

            def ann(i):
                reader.dense(queries[i], 10)

            exact_t = timed(exact, args.queries)
            ann_t = timed(ann, args.queries)
            recall = np.mean([len({k for k, _ in reader.dense(queries[i], 10)} & exact_ids[i]) / 10
                              for i in range(args.queries)])
            result["search"][name] = {"hnsw_build_s": round(build_s, 2), "hnsw_bytes": files.vectors.stat().st_size,
                                      "hnsw_ms": ann_t, "exact_numpy_ms": exact_t,
                                      "recall_at_10_vs_exact": round(float(recall), 4)}
            if name == "clustered":
                # Query words from ranks 50-5,000: what a question names, not "the" or "of".
                asked = [" ".join(rng.choice(words[50:5000], size=4)) for _ in range(args.queries)]
                result["search"]["lexical_ms"] = timed(lambda i: reader.lexical(asked[i], 50), args.queries)

                def hybrid(i):
                    fused = rrf([[k for k, _ in reader.lexical(asked[i], 50)],
                                 [k for k, _ in reader.dense(queries[i], 50)]])[:5]
                    reader.chunks(k for k, _ in fused)

                result["search"]["hybrid_ms"] = timed(hybrid, args.queries)
            reader.close()
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]

    e = result["embedding"]
    print(f"embedding (all-MiniLM-L6-v2, {args.threads} threads, {len(texts)} real afs chunks): "
          f"{e['256_tokens']['chunks_per_second']} chunks/s at 256 tokens "
          f"({e['256_tokens']['chunks_per_cpu_second']} per CPU-second), "
          f"{e['128_tokens']['chunks_per_second']} at 128 ({e['128_tokens']['chunks_per_cpu_second']} per CPU-second); "
          f"one query {e['query_ms']['p50_ms']} ms p50")
    b = result["build"]
    print(f"build ({args.chunks:,} chunks): SQLite + FTS5 {b['sqlite_fts5_s']} s")
    for name in sets:
        s = result["search"][name]
        print(f"  {name}: HNSW build {s['hnsw_build_s']} s; query HNSW p50 {s['hnsw_ms']['p50_ms']} ms "
              f"p95 {s['hnsw_ms']['p95_ms']} ms, exact numpy p50 {s['exact_numpy_ms']['p50_ms']} ms "
              f"p95 {s['exact_numpy_ms']['p95_ms']} ms; HNSW recall@10 vs exact {s['recall_at_10_vs_exact']}")
    print(f"  BM25 p50 {result['search']['lexical_ms']['p50_ms']} ms p95 {result['search']['lexical_ms']['p95_ms']} ms; "
          f"hybrid (BM25 + HNSW + fusion + fetch) p50 {result['search']['hybrid_ms']['p50_ms']} ms "
          f"p95 {result['search']['hybrid_ms']['p95_ms']} ms")
    print(f"load average before {result['load_average_before']}, after {result['load_average_after']}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
