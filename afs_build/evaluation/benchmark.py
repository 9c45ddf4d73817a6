"""Ask a served specialist the benchmark questions, grade the replies, sum them up.

Every question goes to the specialist's own OpenAI-compatible endpoint (the one ``deploy``
started) as a chat with the specialist's system prompt, greedy (temperature 0), so a rerun on
the same model gives the same replies. Each reply is recorded with its score, latency and
speed as one ``specs/result.schema.json`` line; the summary has the mean score, per category
and overall, and the generation speed, against the manifest's pass marks.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..errors import StageError
from . import grading


def endpoint(manifest, name: str) -> "Endpoint":
    """Where the served specialist `name` of `manifest` answers, with the key it wants."""
    from ..deploy.access import client_key

    return Endpoint(name, manifest.deploy.host, manifest.specialists[name].port, client_key(manifest.deploy))


@dataclass(frozen=True)
class Endpoint:
    """A served model: its alias (the specialist's name) and where it answers."""

    name: str
    host: str
    port: int
    key: Optional[str] = None  # the API key the server wants, when it wants one (deploy.api_key_env)

    @property
    def url(self) -> str:
        from ..deploy.server import connect_host

        host = connect_host(self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/v1/chat/completions"


def chat(endpoint: Endpoint, messages: list[dict], max_tokens: int, timeout: float = 600.0,
         extra: Optional[dict] = None) -> dict:
    """One greedy chat completion: {"reply", "latency_s", "completion_tokens", "retrieved"}.

    `extra` goes into the request body (``{"retrieval": False}`` turns retrieval off).
    """
    body = json.dumps({"model": endpoint.name, "messages": messages, "max_tokens": max_tokens,
                       "temperature": 0.0, "seed": 0, **(extra or {})}).encode()
    headers = {"Content-Type": "application/json"}
    if endpoint.key:
        headers["Authorization"] = f"Bearer {endpoint.key}"
    request = urllib.request.Request(endpoint.url, data=body, headers=headers)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")[:300]
        raise StageError(f"the server of {endpoint.name!r} on port {endpoint.port} answered "
                         f"HTTP {err.code}: {detail}") from None
    except (OSError, ValueError) as err:
        raise StageError(f"the server of {endpoint.name!r} on port {endpoint.port} did not answer "
                         f"({err}); start it with: doit deploy:{endpoint.name}") from None
    latency = time.perf_counter() - started
    try:
        reply = data["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise StageError(f"the server of {endpoint.name!r} on port {endpoint.port} sent no reply: "
                         f"{json.dumps(data)[:300]}") from None
    tokens = (data.get("usage") or {}).get("completion_tokens")
    retrieved = (data.get("retrieval") or {}).get("chunks") if isinstance(data.get("retrieval"), dict) else None
    return {"reply": reply, "latency_s": round(latency, 4),
            "completion_tokens": tokens if isinstance(tokens, int) else None,
            "retrieved": [f"{c['file']}:{c['start_line']}-{c['end_line']}" for c in retrieved] if retrieved else None}


def ask(endpoint: Endpoint, question: dict, system_prompt: str, extra: Optional[dict] = None) -> dict:
    """The specialist's answer to one question, timed."""
    system = question["system"] if question["system"] is not None else system_prompt
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": question["question"]}]
    return chat(endpoint, messages, question["max_tokens"], extra=extra)


def judge(judges: Sequence[Endpoint], question: dict, reply: str) -> tuple[float, list[dict]]:
    """The judges' mean score of `reply` (0 when none gave one) and each judgement."""
    judgements, scores = [], []
    for endpoint in judges:
        verdict = chat(endpoint, [{"role": "system", "content": grading.JUDGE_SYSTEM},
                                  {"role": "user", "content": grading.judge_prompt(question, reply)}], 64)
        score = grading.judge_score(verdict["reply"])
        if score is None:
            judgements.append({"judge": endpoint.name, "score": 0.0, "reliability": 0.0,
                               "reasoning": f"no score in the judge's reply: {verdict['reply'][:200]}"})
            continue
        scores.append(score)
        judgements.append({"judge": endpoint.name, "score": score, "reliability": 1.0,
                           "reasoning": verdict["reply"][:500]})
    return (sum(scores) / len(scores) if scores else 0.0), judgements


def run(endpoint: Endpoint, questions: Sequence[dict], *, system_prompt: str, run_id: str,
        judges: Sequence[Endpoint] = (), model_file: Optional[str] = None, quant: Optional[str] = None,
        advance: Callable[[], None] = lambda: None, extra: Optional[dict] = None) -> list[dict]:
    """Every question asked and graded: one result (specs/result.schema.json) per question.

    `extra` goes into each request body (see :func:`chat`); judges are asked without it.
    """
    # nobody grades their own answers, unless it is the only judge there is
    others = [j for j in judges if j.name != endpoint.name]
    results = []
    for question in questions:
        answer = ask(endpoint, question, system_prompt, extra)
        if question["grading"] == "judge":
            judging = others or list(judges)
            score, judgements = judge(judging, question, answer["reply"])
            grader = "judge:" + "+".join(j.name for j in judging)
        else:
            score, judgements, grader = grading.rule_score(question, answer["reply"]), [], question["grading"]
        tokens = answer["completion_tokens"]
        results.append({
            "run": run_id, "specialist": endpoint.name, "model_file": model_file, "quant": quant,
            "question_id": question["id"], "category": question["category"], "reply": answer["reply"],
            "score": round(score, 4), "passed": grading.passed(question, score), "grader": grader,
            "judgements": judgements, "latency_s": answer["latency_s"], "completion_tokens": tokens,
            "tokens_per_second": round(tokens / answer["latency_s"], 2) if tokens and answer["latency_s"] > 0 else None,
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        })
        if answer.get("retrieved"):
            results[-1]["retrieved"] = answer["retrieved"]
        advance()
    return results


def summarize(name: str, results: Sequence[dict], min_score: float = 0.0,
              min_tokens_per_second: float = 0.0) -> dict:
    """Mean score overall and per category, speed, and whether the pass marks are met."""
    def block(items: Sequence[dict]) -> dict:
        return {"questions": len(items), "mean_score": round(sum(r["score"] for r in items) / len(items), 4),
                "passed": sum(1 for r in items if r["passed"])}

    categories = sorted({r["category"] for r in results})
    tokens = sum(r["completion_tokens"] or 0 for r in results)
    seconds = sum(r["latency_s"] or 0.0 for r in results)
    overall = block(results)
    speed = round(tokens / seconds, 2) if tokens and seconds else None
    failures = []
    if overall["mean_score"] < min_score:
        failures.append(f"mean score {overall['mean_score']:.3f} is below eval.thresholds.min_score {min_score:g}")
    if min_tokens_per_second and (speed or 0.0) < min_tokens_per_second:
        failures.append(f"generation speed {speed or 0:.1f} tokens/s is below "
                        f"eval.thresholds.min_tokens_per_second {min_tokens_per_second:g}")
    return {"specialist": name, **overall,
            "by_category": {c: block([r for r in results if r["category"] == c]) for c in categories},
            "completion_tokens": tokens, "seconds": round(seconds, 3), "tokens_per_second": speed,
            "thresholds": {"min_score": min_score, "min_tokens_per_second": min_tokens_per_second},
            "meets_thresholds": not failures, "failures": failures}
