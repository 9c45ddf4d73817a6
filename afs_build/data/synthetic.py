"""Synthetic samples: a fact table rendered through Jinja question/answer templates.

Facts are a YAML list of mappings or a CSV file with a header row. Templates are a YAML list::

    - name: register-purpose        # unique; names the template in errors and provenance
      when: register                # optional: field(s) a fact must have (not null) to use it
      system: "You are ..."         # optional system turn
      questions:                    # the paraphrases of one question
        - "What does {{ register }} at {{ address }} do?"
        - "Explain the {{ register }} register."
      answer: "{{ register }} ({{ address }}): {{ answer }}"

Templates render in a sandbox with ``StrictUndefined``: a field a template uses but a fact lacks
is an error (guard it with ``when``), not an empty string. A fact's ``topic``, when present, is
copied into each sample's metadata.

Each fact x applicable template x chosen paraphrase becomes one sample. ``paraphrases`` caps
how many phrasings each pair gets; which ones is drawn from a generator seeded with the seed,
the template name and the fact's content, so a rebuild picks the same ones and inserting a fact
does not reshuffle the others.

An optional teacher (any OpenAI-compatible endpoint) writes the answers instead of the
template; its replies are cached by a digest of the request so that a rebuild asks nothing
twice. The API key is read from the environment at call time and is never stored.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

from afs_build.atomic import write_json
from afs_build.data.records import RECORD, Filtered, Record, Reject, canonical_json, make_sample
from afs_build.data.secrets import find_secret
from afs_build.errors import StageError, one_of, suggest

TEMPLATE_KEYS = ("name", "when", "questions", "answer", "system")
REQUIRED_TEMPLATE_KEYS = ("name", "questions", "answer")


class TemplateError(StageError, ValueError):
    """A templates file is malformed, or a template fails to render."""


class FactsError(StageError, ValueError):
    """A facts file cannot be read as a list of facts at all."""


class TeacherError(StageError):
    """The teacher endpoint failed or answered something unusable (the message names it)."""


@dataclass(frozen=True)
class TeacherConfig:
    """A teacher model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    base_url: str
    model: str
    api_key_env: str | None = None  # the *name* of the variable; its value is read per request
    temperature: float = 0.2
    max_tokens: int = 512
    timeout: float = 60.0


@dataclass(frozen=True)
class Template:
    """One parsed template: compiled Jinja for each question, the answer and the system turn."""

    name: str
    line: int
    when: tuple[str, ...]
    questions: tuple[jinja2.Template, ...]
    answer: jinja2.Template
    system: jinja2.Template | None


def convert_synthetic(
    facts_path,
    templates_path,
    *,
    source: str,
    seed: int = 0,
    paraphrases: int | None = None,
    teacher: TeacherConfig | None = None,
    cache_dir=None,
) -> Iterator[Record]:
    """Yield one sample per fact, applicable template and chosen question paraphrase."""
    if paraphrases is not None and paraphrases < 1:
        raise TemplateError(f"paraphrases must be at least 1 (or None for all), got {paraphrases}")
    templates = load_templates(templates_path)
    facts_file = str(facts_path)
    for line, fact in load_facts(facts_path):
        yield RECORD  # each fact is one input record
        if isinstance(fact, BadFact):
            yield Reject(source, fact.reason, file=facts_file, line=line, excerpt=fact.excerpt)
            continue
        applicable = [t for t in templates if all(fact.get(field) is not None for field in t.when)]
        if not applicable:
            # every template's `when` asks for a field this fact lacks: filtered, not broken
            yield Filtered("no template applies (each needs a field this fact lacks)")
            continue
        for template in applicable:
            yield from _fact_samples(fact, line, template, source=source, facts_file=facts_file,
                                     templates_file=str(templates_path), seed=seed,
                                     paraphrases=paraphrases, teacher=teacher, cache_dir=cache_dir)


def _fact_samples(fact: dict, line: int, template: Template, *, source: str, facts_file: str,
                  templates_file: str, seed: int, paraphrases: int | None,
                  teacher: TeacherConfig | None, cache_dir) -> Iterator[Record]:
    where = f"{facts_file}:{line}"
    render = lambda compiled, part: _render(compiled, fact, template, part, templates_file, where)  # noqa: E731
    answer = render(template.answer, "answer")
    system = render(template.system, "system") if template.system is not None else ""
    if not answer and teacher is None:
        yield Reject(source, f"template '{template.name}' rendered an empty answer", file=facts_file, line=line)
        return
    for index in _choose(len(template.questions), paraphrases, seed, template.name, fact):
        question = render(template.questions[index], f"questions[{index}]")
        if not question:
            yield Reject(source, f"template '{template.name}' rendered an empty question (questions[{index}])",
                         file=facts_file, line=line)
            continue
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": question})
        generator = f"template:{template.name}"
        metadata: dict[str, Any] = {"kind": "synthetic", "template": template.name, "paraphrase": index}
        if isinstance(fact.get("topic"), str):
            metadata["topic"] = fact["topic"]
        reply = answer
        if teacher is not None:
            found = find_secret("\n".join(m["content"] for m in messages))
            if found is not None:  # never sent to the teacher, never cached under build/
                yield Reject(source, f"secret: {found.rule}", file=facts_file, line=line,
                             detail={"template": template.name, "paraphrase": index,
                                     "rule": found.rule})
                continue
            reply = ask_teacher(teacher, messages, cache_dir).strip()
            generator = f"teacher:{teacher.model}"
            metadata["teacher"] = teacher.model
        if not reply:
            yield Reject(source, f"teacher {teacher.model!r} gave an empty answer", file=facts_file,
                         line=line, excerpt=question)
            continue
        messages.append({"role": "assistant", "content": reply})
        yield make_sample(source, messages, metadata=metadata,
                          provenance={"file": facts_file, "line": line, "generator": generator})


def _choose(count: int, paraphrases: int | None, seed: int, name: str, fact: dict) -> list[int]:
    """Indices of the question paraphrases to use, in order; all of them when not capped."""
    if paraphrases is None or paraphrases >= count:
        return list(range(count))
    rng = random.Random(f"{seed}\0{name}\0{canonical_json(_jsonable(fact))}")
    return sorted(rng.sample(range(count), paraphrases))


def _render(compiled: jinja2.Template, fact: dict, template: Template, part: str,
            templates_file: str, where: str) -> str:
    try:
        return compiled.render(_context(fact)).strip()
    except Exception as exc:  # undefined names, sandbox refusals, a filter given the wrong type
        jinja_message = exc.message if isinstance(exc, jinja2.TemplateError) else None
        problem = jinja_message or f"{type(exc).__name__}: {exc}"
        raise TemplateError(f"{templates_file}:{template.line}: template '{template.name}': {problem} "
                            f"in {part} (rendering the fact at {where})") from exc


def _context(fact: dict) -> dict:
    """The variables a template sees: the fact's fields, by name."""
    return dict(fact)


# --- loading ---------------------------------------------------------------------------------


def load_templates(path) -> list[Template]:
    """Parse and compile a templates file; any problem raises :class:`TemplateError`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"templates file not found: {path}")
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}:{_yaml_where(exc)}invalid YAML: {_yaml_problem(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise TemplateError(f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except RecursionError:
        raise TemplateError(f"{path}: nested too deeply to read") from None
    if not isinstance(node, yaml.SequenceNode):
        raise TemplateError(f"{path}: expected a list of templates, got {_node_kind(node)}")
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                               trim_blocks=True, lstrip_blocks=True)
    templates: list[Template] = []
    seen: set[str] = set()
    for number, item in enumerate(node.value, start=1):
        line = item.start_mark.line + 1
        raw = _construct(item, path, TemplateError)
        where = f"{path}:{line}"
        if not isinstance(raw, dict):
            raise TemplateError(f"{where}: template #{number}: expected a mapping with keys "
                                f"{', '.join(REQUIRED_TEMPLATE_KEYS)}, got {_kind(raw)}")
        name = raw.get("name")
        label = f"template '{name}'" if isinstance(name, str) and name else f"template #{number}"
        for key in raw:
            if key not in TEMPLATE_KEYS:
                raise TemplateError(f"{where}: {label}: unknown key {key!r}{suggest(key, TEMPLATE_KEYS)}; "
                                    f"expected one of: {one_of(TEMPLATE_KEYS)}")
        for key in REQUIRED_TEMPLATE_KEYS:
            if key not in raw:
                raise TemplateError(f"{where}: {label}: missing key {key!r}")
        if not isinstance(name, str) or not name.strip():
            raise TemplateError(f"{where}: {label}: 'name' must be a non-empty string")
        if name in seen:
            raise TemplateError(f"{where}: {label}: duplicate template name")
        seen.add(name)
        questions = raw["questions"]
        if not isinstance(questions, list) or not questions or not all(isinstance(q, str) for q in questions):
            raise TemplateError(f"{where}: {label}: 'questions' must be a non-empty list of strings")
        when = raw.get("when") or ()
        when = (when,) if isinstance(when, str) else when
        if not isinstance(when, (list, tuple)) or not all(isinstance(w, str) for w in when):
            raise TemplateError(f"{where}: {label}: 'when' must be a field name or a list of field names")
        for key in ("answer", "system"):
            if key in raw and not isinstance(raw[key], str):
                raise TemplateError(f"{where}: {label}: {key!r} must be a string, got {_kind(raw[key])}")
        compile_ = lambda text, part: _compile(env, text, where, label, part)  # noqa: E731
        templates.append(Template(
            name=name,
            line=line,
            when=tuple(when),
            questions=tuple(compile_(q, f"questions[{i}]") for i, q in enumerate(questions)),
            answer=compile_(raw["answer"], "answer"),
            system=compile_(raw["system"], "system") if raw.get("system") is not None else None,
        ))
    return templates


def _compile(env: SandboxedEnvironment, text: str, where: str, label: str, part: str) -> jinja2.Template:
    try:
        return env.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{where}: {label}: syntax error in {part}: {exc.message} "
                            f"(line {exc.lineno} of the template text)") from exc


class BadFact(NamedTuple):
    """An entry of a facts file that is not a usable fact (the converter rejects it)."""

    reason: str
    excerpt: str


def load_facts(path) -> Iterator[tuple[int, dict | BadFact]]:
    """Yield (line, fact) for each entry of a YAML list or each CSV row (blank cells dropped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"facts file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        yield from _csv_facts(path)
    elif suffix in (".yaml", ".yml", ".json"):
        yield from _yaml_facts(path)
    else:
        raise FactsError(f"{path}: facts must be a .yaml, .yml, .json or .csv file, got {suffix or 'no extension'!r}")


def _yaml_facts(path: Path) -> Iterator[tuple[int, dict | BadFact]]:
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise FactsError(f"{path}:{_yaml_where(exc)}invalid YAML: {_yaml_problem(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise FactsError(f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except RecursionError:
        raise FactsError(f"{path}: nested too deeply to read") from None
    if node is None:
        return
    if not isinstance(node, yaml.SequenceNode):
        raise FactsError(f"{path}: expected a list of facts (mappings), got {_node_kind(node)}")
    for item in node.value:
        value = _construct(item, path)
        if isinstance(value, dict):
            yield item.start_mark.line + 1, {str(key): field for key, field in value.items()}
        else:
            reason = f"fact is not a mapping: got {_kind(value)}"
            yield item.start_mark.line + 1, BadFact(reason, json.dumps(value, default=str))


def _csv_facts(path: Path) -> Iterator[tuple[int, dict | BadFact]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                return
            header = [name.strip() for name in header]
            start = reader.line_num + 1
            for row in reader:
                line, start = start, reader.line_num + 1
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    reason = f"row has {len(row)} fields, the header has {len(header)}"
                    yield line, BadFact(reason, ",".join(row))
                    continue
                yield line, {name: cell for name, cell in zip(header, row) if cell.strip()}
    except UnicodeDecodeError as exc:
        raise FactsError(f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except csv.Error as exc:  # a NUL byte, a field over the size limit: cannot resynchronize
        raise FactsError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from exc


def _construct(node: yaml.Node, path: Path, error: type = None) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    except (yaml.YAMLError, RecursionError, TypeError, ValueError) as exc:  # tags, deep nesting
        line = node.start_mark.line + 1
        problem = getattr(exc, "problem", None) or f"{type(exc).__name__}: {exc}"
        raise (error or FactsError)(f"{path}:{line}: cannot read this entry: {problem}") from None
    finally:
        loader.dispose()


def _kind(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}
    return names.get(type(value), type(value).__name__)


def _node_kind(node: yaml.Node | None) -> str:
    if node is None:
        return "an empty file"
    return {yaml.MappingNode: "a mapping", yaml.ScalarNode: "a single value"}.get(type(node), "a list")


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"{mark.line + 1}:{mark.column + 1}: " if mark is not None else " "


def _yaml_problem(exc: yaml.YAMLError) -> str:
    return getattr(exc, "problem", None) or str(exc)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


# --- teacher ---------------------------------------------------------------------------------


def ask_teacher(teacher: TeacherConfig, messages: list[dict], cache_dir=None) -> str:
    """The teacher's reply to ``messages``, from the cache when this exact request was made before.

    The cache key is a SHA-256 of (base_url, model, messages, temperature, max_tokens); the
    cached file holds the request and the reply, never the API key.
    """
    request = {"base_url": teacher.base_url, "model": teacher.model, "messages": messages,
               "temperature": teacher.temperature, "max_tokens": teacher.max_tokens}
    digest = hashlib.sha256(canonical_json(request).encode("utf-8")).hexdigest()
    cached = Path(cache_dir) / f"{digest}.json" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        try:
            return json.loads(cached.read_text(encoding="utf-8"))["answer"]
        except (ValueError, KeyError, TypeError):
            pass  # a damaged entry is asked again and overwritten
    answer = _post(teacher, messages)
    # An answer carrying a secret is rejected at ingest; it must not stay in the cache either.
    if cached is not None and answer.strip() and find_secret(answer) is None:
        write_json(cached, {**request, "answer": answer})
    return answer


def _post(teacher: TeacherConfig, messages: list[dict]) -> str:
    url = teacher.base_url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    secret = None
    if teacher.api_key_env:
        secret = os.environ.get(teacher.api_key_env)
        if not secret:
            raise TeacherError(f"teacher {teacher.model!r} at {url}: environment variable "
                               f"{teacher.api_key_env} (api_key_env) is not set")
        headers["Authorization"] = f"Bearer {secret}"
    body = {"model": teacher.model, "messages": messages, "temperature": teacher.temperature,
            "max_tokens": teacher.max_tokens}
    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=teacher.timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        message = f"teacher request to {url} failed: HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
        raise TeacherError(_scrub(message, secret)) from exc
    except urllib.error.URLError as exc:
        raise TeacherError(_scrub(f"teacher request to {url} failed: {exc.reason}", secret)) from exc
    except TimeoutError as exc:
        raise TeacherError(f"teacher request to {url} timed out after {teacher.timeout:g} s") from exc
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError, RecursionError):
        content = None
    if not isinstance(content, str):
        excerpt = raw[:200].decode("utf-8", "replace")
        raise TeacherError(_scrub(f"teacher at {url} returned an unexpected response "
                                  f"(expected choices[0].message.content): {excerpt}", secret))
    return content


def _scrub(text: str, secret: str | None) -> str:
    """Remove the API key from a message, in case a server echoes it back."""
    return text.replace(secret, "***") if secret else text
