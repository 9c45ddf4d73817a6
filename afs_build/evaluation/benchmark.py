"""Ask a served model the benchmark questions, grade the replies by rule, sum them up.

Every question goes to the model's OpenAI-compatible endpoint as a chat with the
specialist's system prompt (or the question's own), greedy and seeded, so a rerun on the same
model gives the same replies; the cache (:mod:`.cache`) answers what was asked of the same
file before. Each reply is one ``specs/result.schema.json`` line with its score, latency, time
to first token and speed. A failed request is recorded with its reason and no score (it is not
a wrong answer); a question graded by judges gets its score from ``judge:family``.

The summary has the mean score over the scored questions, per category and overall, the
latency and time-to-first-token percentiles and the generation speed, against the pass marks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from typing import Callable, Iterator, Optional, Sequence

from . import grading
from .cache import ResponseCache
from .client import Completion, Endpoint
from .local import messages_for
from .runner import Request, ask_all, sampling


def endpoint(manifest, name: str, layout=None) -> Endpoint:
    """Where the served specialist `name` of `manifest` answers: its URL, the key it wants,
    the digest of the file it serves (for the cache) and the manifest's request settings."""
    from ..deploy.access import client_key
    from ..deploy.server import connect_host, served_gguf
    from ..paths import Layout

    layout = layout or Layout.of(manifest)
    spec = manifest.specialists[name]
    host = connect_host(manifest.deploy.host)
    host = f"[{host}]" if ":" in host else host
    digest = served_digest(layout.post(name).quantize_report, served_gguf(layout, spec).name)
    return local_endpoint(manifest, name, f"http://{host}:{spec.port}/v1", client_key(manifest.deploy), digest)


def local_endpoint(manifest, name: str, base_url: str, key: Optional[str], digest: Optional[str]) -> Endpoint:
    e = manifest.eval
    return Endpoint(name=name, base_url=base_url, key=key, digest=digest, concurrency=e.concurrency,
                    timeout=e.timeout, retries=e.retries)


@contextlib.contextmanager
def mirrored(manifest, endpoint: Endpoint, gguf, *, n_ctx: int, folder, retrieval=None,
             task: Optional[str] = None) -> Iterator[Endpoint]:
    """`endpoint` with ``eval.copies - 1`` copies of its server (the same `gguf`, retrieval
    settings and key) as mirrors, on free loopback ports until the block ends."""
    count = manifest.eval.model_copies - 1
    if count < 1:
        yield endpoint
        return
    from .. import log
    from ..deploy.server import copies

    def warn(text: str) -> None:
        log.event(f"WARNING: {text}", task=task, specialist=endpoint.name)

    with copies(endpoint.name, gguf, count, n_ctx=n_ctx, folder=folder, key=endpoint.key,
                retrieval=retrieval, warn=warn) as urls:
        yield dataclasses.replace(endpoint, mirrors=urls)


def served_digest(report, file_name: str) -> Optional[str]:
    """The sampled digest a report (quantize.json, baseline.json) records for `file_name`."""
    try:
        return json.loads(report.read_text(encoding="utf-8"))["files"][file_name]["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def with_retrieval(endpoint: Endpoint, report, settings) -> Endpoint:
    """`endpoint` as the cache must see a retrieving server: its replies depend on the index's
    content (the digests of the files indexed, the chunking and the embedding model, from its
    report) and the specialist's retrieval settings, not only on the
    served file (whose digest the results still name)."""
    import dataclasses
    import hashlib

    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):  # no index to key by (doit builds it first): a key used once
        import secrets

        return dataclasses.replace(endpoint, context=f"retrieval:unread:{secrets.token_hex(8)}")
    # the files' digests, not their sizes and times: a touched, unchanged file asks nothing again
    stable = {"model": data.get("model"), "settings": data.get("settings"),
              "inputs": {path: entry[-1] for path, entry in sorted((data.get("inputs") or {}).items())
                         if isinstance(entry, list) and entry}}
    from ..retrieval.context import CONTEXT_FORMAT

    text = json.dumps({"index": stable, "settings": dataclasses.asdict(settings), "format": CONTEXT_FORMAT},
                      sort_keys=True, default=str)
    return dataclasses.replace(endpoint, context=f"retrieval:{hashlib.sha256(text.encode()).hexdigest()[:16]}")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def result(endpoint: Endpoint, question: dict, answer: Completion, *, run_id: str,
           model_file: Optional[str], quant: Optional[str]) -> dict:
    """One result line: the reply graded (by rule), or pending judges, or failed."""
    score: Optional[float] = None
    detail = ""
    if answer.error:
        grader = question["grading"]
    elif question["grading"] == "judge":
        grader = "judge"  # scored by judge:family, from the judges' weighted verdicts
    else:
        score, detail = grading.grade(question, answer.reply)
        score, grader = round(score, 4), question["grading"]
    tokens, latency = answer.completion_tokens, answer.latency_s
    return {
        "run": run_id, "specialist": endpoint.name, "model_file": model_file, "quant": quant,
        "model_digest": endpoint.digest, "question_id": question["id"], "category": question["category"],
        "reply": answer.reply, "score": score, "passed": grading.passed(question, score), "grader": grader,
        "detail": detail, "judgements": [], "error": answer.error, "attempts": answer.attempts,
        "cached": answer.cached, "latency_s": latency, "ttft_s": answer.ttft_s, "completion_tokens": tokens,
        "tokens_per_second": round(tokens / latency, 2) if tokens and latency else None,
        "time": now(),
        **({"retrieved": list(answer.retrieved)} if answer.retrieved else {}),
    }


def run(endpoint: Endpoint, questions: Sequence[dict], *, system_prompt: str, run_id: str,
        model_file: Optional[str] = None, quant: Optional[str] = None,
        cache: Optional[ResponseCache] = None, advance: Callable[[], None] = lambda: None,
        extra: Optional[dict] = None) -> list[dict]:
    """Every question asked and graded: one result (specs/result.schema.json) per question.

    `extra` goes into each request body (``{"retrieval": False}`` turns a retrieving
    specialist's retrieval off) and into the cache key, so both ways are cached apart.
    """
    requests = [Request(endpoint, tuple(messages_for(q, system_prompt)), sampling(q["max_tokens"]),
                        dict(extra or {})) for q in questions]
    answers = ask_all(requests, cache, advance)
    return [result(endpoint, q, a, run_id=run_id, model_file=model_file, quant=quant)
            for q, a in zip(questions, answers)]


def percentile(values: Sequence[float], share: float) -> Optional[float]:
    """The `share` percentile of `values` (linear between the nearest ranks); None when empty."""
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    rank = (len(data) - 1) * share
    low = int(rank)
    high = min(low + 1, len(data) - 1)
    return round(data[low] + (data[high] - data[low]) * (rank - low), 4)


def speed(results: Sequence[dict]) -> dict:
    """Latency and time to first token (p50, p95) and generation speed of the answered requests."""
    asked = [r for r in results if not r.get("error") and not r.get("cached")]
    tokens = sum(r["completion_tokens"] or 0 for r in asked)
    seconds = sum(r["latency_s"] or 0.0 for r in asked)
    decode = sum(max(0.0, (r["latency_s"] or 0.0) - (r.get("ttft_s") or 0.0)) for r in asked)
    after_first = sum(max(0, (r["completion_tokens"] or 0) - 1) for r in asked)
    return {
        "measured": len(asked),
        "latency_s": {"p50": percentile([r["latency_s"] for r in asked], 0.5),
                      "p95": percentile([r["latency_s"] for r in asked], 0.95)},
        "ttft_s": {"p50": percentile([r.get("ttft_s") for r in asked], 0.5),
                   "p95": percentile([r.get("ttft_s") for r in asked], 0.95)},
        "completion_tokens": tokens, "seconds": round(seconds, 3),
        "tokens_per_second": round(tokens / seconds, 2) if tokens and seconds else None,
        "decode_tokens_per_second": round(after_first / decode, 2) if after_first and decode else None,
    }


def block(items: Sequence[dict]) -> dict:
    """Questions, how many were scored, their mean score and how many passed."""
    scored = [r["score"] for r in items if r["score"] is not None]
    return {"questions": len(items), "scored": len(scored),
            "mean_score": round(sum(scored) / len(scored), 4) if scored else None,
            "passed": sum(1 for r in items if r["passed"])}


def summarize(name: str, results: Sequence[dict], min_score: float = 0.0,
              min_tokens_per_second: float = 0.0) -> dict:
    """Mean score overall and per category, speed percentiles, and whether the pass marks are met."""
    categories = sorted({r["category"] for r in results})
    overall = block(results)
    measured = speed(results)
    if not measured["measured"]:  # every reply from the cache: the speed they were first asked at
        measured = speed([{**r, "cached": False} for r in results])
    failures = []
    mean = overall["mean_score"]
    if min_score and (mean is None or mean < min_score):
        failures.append(f"mean score {mean or 0:.3f} is below eval.thresholds.min_score {min_score:g}")
    rate = measured["tokens_per_second"]
    if min_tokens_per_second and rate is None:
        failures.append(f"no tokens were generated, so the speed against "
                        f"eval.thresholds.min_tokens_per_second {min_tokens_per_second:g} is unknown")
    elif min_tokens_per_second and rate < min_tokens_per_second:
        failures.append(f"generation speed {rate or 0:.1f} tokens/s is below "
                        f"eval.thresholds.min_tokens_per_second {min_tokens_per_second:g}")
    failed = [r for r in results if r.get("error")]
    return {"specialist": name, **overall,
            "by_category": {c: block([r for r in results if r["category"] == c]) for c in categories},
            "failed_requests": len(failed),
            "failed": [{"question_id": r["question_id"], "error": r["error"]} for r in failed],
            "pending_judges": sum(1 for r in results if r["grader"] == "judge" and not r.get("error")),
            "cached": sum(1 for r in results if r.get("cached")),
            "model_digest": next((r.get("model_digest") for r in results), None),
            **{k: measured[k] for k in ("completion_tokens", "seconds", "tokens_per_second")},
            "latency_s": measured["latency_s"], "ttft_s": measured["ttft_s"],
            "decode_tokens_per_second": measured["decode_tokens_per_second"],
            "thresholds": {"min_score": min_score, "min_tokens_per_second": min_tokens_per_second},
            "meets_thresholds": not failures, "failures": failures}


def external_endpoint(manifest, name: str) -> Endpoint:
    """An ``eval.endpoints`` entry as an Endpoint: its key read from the environment variable
    the manifest names (never from the manifest), its cache key as its digest."""
    import os

    from ..errors import StageError

    entry = manifest.eval.endpoints[name]
    key = None
    if entry.api_key_env:
        key = os.environ.get(entry.api_key_env)
        if not key:
            raise StageError(f"{manifest.file.name}: eval.endpoints.{name}.api_key_env names "
                             f"{entry.api_key_env}, which is not set; export it with the API key")
    e = manifest.eval
    return Endpoint(name=name, base_url=entry.base_url, key=key, model=entry.model,
                    digest=f"external:{entry.base_url}:{entry.model}:{entry.cache_key}" if entry.cache_key else None,
                    concurrency=entry.concurrency or e.concurrency, timeout=e.timeout, retries=e.retries)


def any_endpoint(manifest, name: str, layout=None) -> Endpoint:
    """A specialist's server, or an eval.endpoints entry."""
    return external_endpoint(manifest, name) if name in manifest.eval.endpoints else endpoint(manifest, name, layout)
