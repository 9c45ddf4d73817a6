"""Ollama: a ``Modelfile`` per specialist, from ``templates/Modelfile.j2``.

Ollama does not run the Jinja chat template stored in a GGUF; it wants its own Go template.
afs recognises the template's family by its turn markers (a small table, :data:`FAMILIES`)
and writes that family's Go template, with ``PARAMETER stop`` for the family's turn markers
and the model's own end tokens, so a reply never runs on into a made-up next turn. An
unrecognised template is an error that says which families afs knows.

String values are written as Ollama's triple-quoted strings. Ollama's parser has no escapes:
such a string ends early at three double quotes followed by a line break, and the parser drops
characters Go does not call printable, so :func:`quote` refuses values it cannot write
faithfully rather than corrupting them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from ..atomic import atomic_path
from ..errors import StageError
from ..manifest import Manifest
from ..resources import templates_dir

TEMPLATE = "Modelfile.j2"


@dataclass(frozen=True)
class ChatFamily:
    """A chat-template family: how to recognise it, Ollama's template for it, its stop strings."""

    name: str
    markers: tuple[str, ...]  # every one appears in a template of this family
    go_template: str
    stops: tuple[str, ...]


# Ollama passes the Modelfile's SYSTEM as the first of .Messages (and in .System), so ranging
# over .Messages alone renders each turn exactly once.
CHATML = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n"
          "{{ .Content }}<|im_end|>\n"
          "{{ end }}<|im_start|>assistant\n")
LLAMA3 = ("{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
          "{{ .Content }}<|eot_id|>\n"
          "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n")

FAMILIES: tuple[ChatFamily, ...] = (
    # Qwen2, SmolLM2 and most small instruct models.
    ChatFamily("chatml", ("<|im_start|>", "<|im_end|>"), CHATML,
               ("<|im_end|>", "<|im_start|>", "<|endoftext|>")),
    ChatFamily("llama3", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), LLAMA3,
               ("<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>", "<|eom_id|>")),
)


def family_of(chat_template: str) -> Optional[ChatFamily]:
    """The family whose markers all appear in `chat_template`, or None."""
    for family in FAMILIES:
        if all(marker in chat_template for marker in family.markers):
            return family
    return None


def require_family(chat_template: Optional[str], where: str) -> ChatFamily:
    """:func:`family_of`, or a StageError naming `where` (the GGUF) and the known families."""
    if not chat_template:
        raise StageError(f"{where}: the GGUF has no chat template (tokenizer.chat_template), so "
                         f"afs cannot write Ollama's TEMPLATE; convert from a model folder whose "
                         f"tokenizer_config.json has a chat_template")
    family = family_of(chat_template)
    if family is None:
        known = "; ".join(f"{f.name} ({', '.join(f.markers)})" for f in FAMILIES)
        raise StageError(f"{where}: unknown chat template family; afs translates these to "
                         f"Ollama templates: {known}. The template begins: "
                         f"{chat_template[:120]!r}")
    return family


@dataclass(frozen=True)
class ChatInfo:
    """What a GGUF says about chatting with it: the Jinja template and its end tokens."""

    template: Optional[str]
    end_tokens: tuple[str, ...]  # the eos and eot tokens' text, where the file names them


def chat_info(gguf: Path) -> ChatInfo:
    """Read the chat template and end tokens from a GGUF's metadata (no tensors are read)."""
    from ..post.gguf_info import read

    fields = read(gguf, arrays=["tokenizer.ggml.tokens"]).fields
    tokens = fields.get("tokenizer.ggml.tokens") or []
    ends = []
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"):
        index = fields.get(key)
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(tokens):
            ends.append(tokens[index])
    return ChatInfo(fields.get("tokenizer.chat_template"), tuple(dict.fromkeys(ends)))


def stops(family: ChatFamily, end_tokens: Sequence[str]) -> tuple[str, ...]:
    """The family's stop strings, then the model's own end tokens, each once."""
    return tuple(dict.fromkeys([*family.stops, *(t for t in end_tokens if t)]))


# Ollama ends a value at a line break once the text so far, blanks trimmed, is a whole quoted
# string: inside a triple-quoted string, three quotes and then only blanks before a line break
# end it there.
_ENDS_EARLY = re.compile(r'"""[ \t]*[\r\n]')
_BARE = re.compile(r'[^\s"]+')


def _dropped(value: str) -> Optional[str]:
    """The first character Ollama's parser would drop (Go's ``strconv.IsPrint`` is false)."""
    return next((c for c in value if c not in "\t\n\r" and not c.isprintable()), None)


def quote(value: str, where: str) -> str:
    """`value` as an Ollama triple-quoted string; StageError where Ollama would misread it."""
    value = str(value)
    if _ENDS_EARLY.search(value):
        raise StageError(f"{where}: has three double quotes at the end of a line, which ends a "
                         f"Modelfile string early (Ollama has no escape for it); reword it")
    bad = _dropped(value)
    if bad is not None:
        raise StageError(f"{where}: contains the character U+{ord(bad):04X}, which Ollama's "
                         f"Modelfile parser drops; remove or replace it")
    return f'"""{value}"""'


def bare_or_quoted(value: str, where: str) -> str:
    """One word as it is (as Ollama itself writes FROM and stop values), anything else quoted."""
    return value if _BARE.fullmatch(value) and _dropped(value) is None else quote(value, where)


def _sampling_value(value: float) -> str:
    return repr(float(value))


def context(manifest: Manifest, specialist: str, gguf: Path, modelfile: Path,
            info: ChatInfo, digest: str) -> dict[str, Any]:
    """The template context: every value already in Modelfile syntax (strings quoted).

    `digest` names the settings the file was written from (the deploy task's slice digest).
    """
    spec = manifest.specialists[specialist]
    key = f"specialists.{specialist}"
    family = require_family(info.template, str(gguf))
    rel = Path(os.path.relpath(Path(gguf).absolute(), Path(modelfile).absolute().parent)).as_posix()
    return {
        "name": spec.name,
        "title": _one_line(spec.title),
        "role": _one_line(spec.role),
        "manifest_file": _one_line(manifest.file.name),
        "digest": digest,
        "family": family.name,
        # Ollama resolves a relative FROM against the Modelfile's folder.
        "from_path": bare_or_quoted(rel, f"{key}: the GGUF path {rel}"),
        "template": quote(family.go_template, f"the {family.name} template"),
        "system": quote(spec.system_prompt, f"{manifest.file}: {key}.system_prompt")
        if spec.system_prompt else None,
        "stops": [bare_or_quoted(s, f"{gguf}: the end token {s!r}")
                  for s in stops(family, info.end_tokens)],
        "temperature": _sampling_value(spec.sampling.temperature),
        "top_p": _sampling_value(spec.sampling.top_p),
        "repeat_penalty": _sampling_value(spec.sampling.repeat_penalty),
        "num_ctx": int(spec.context_length),
        "num_predict": int(spec.sampling.max_tokens),
    }


def _one_line(text: str) -> str:
    """Text fit for a ``#`` comment: one line, printable characters only."""
    return " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())


def render(ctx: dict[str, Any]) -> str:
    """Lay out the Modelfile from a :func:`context`."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE).render(**ctx)


def write_modelfile(manifest: Manifest, specialist: str, gguf: Path, modelfile: Path,
                    digest: str, info: Optional[ChatInfo] = None) -> Path:
    """Write `specialist`'s Modelfile (FROM `gguf`, relative to the Modelfile), atomically.

    `info` defaults to what `gguf` itself says (:func:`chat_info`).
    """
    info = info if info is not None else chat_info(Path(gguf))
    text = render(context(manifest, specialist, Path(gguf), Path(modelfile), info, digest))
    with atomic_path(Path(modelfile)) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(modelfile)
