"""The secrets gate: credentials and personal e-mail addresses in text, found by named rules.

One rule set serves three places: ``ingest`` rejects a sample carrying a secret before it is
written anywhere under ``build/``, converters' rejects have secrets cut out of their excerpts,
and :func:`afs_build.log.redact` replaces them in every log line.

The token formats follow the default rule set of gitleaks (https://github.com/gitleaks/gitleaks,
``config/gitleaks.toml``; MIT licence, Copyright (c) 2019 Zachary Rice), which names each
vendor's prefix and length: ``hf_`` and 34 letters, ``AIza`` and 35 characters, ``xoxb-``
followed by digit groups, ``sk_live_``... The patterns below are written for afs from those
formats, with afs's own look-alike rules, not copied from the file.

Two checks are afs's own: a value assigned to a name that looks secret (``*_TOKEN``,
``*_API_KEY``, ``*_SECRET``, ``PASSWORD``, ``"password": ...``) counts when it is a literal
(quoted, or an unquoted shell/.env value) that is not a placeholder, and, for keys and tokens,
when its Shannon entropy is high enough for its length; a code reference
(``password = input()``, ``token = os.environ["T"]``) is not a literal. Hex hashes, git SHAs,
UUIDs and base64 image data pass unless such a name is given them.

Everything here runs on every sample: each rule first asks for a literal hint that its match
must contain (a C-speed ``in``), and only then runs its pattern.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, NamedTuple, Optional

REDACTED = "[redacted]"


@dataclass(frozen=True)
class Finding:
    """A secret in a text: the rule that found it and the span to cut (the value alone)."""

    rule: str
    start: int
    end: int


class _Rule(NamedTuple):
    name: str
    pattern: re.Pattern
    hints: tuple[str, ...]  # one must occur in the text (case-sensitive) before the pattern runs
    group: int = 0  # the group holding the secret
    check: Optional[Callable[[re.Match], bool]] = None  # a second look at a match


_B = r"(?<![A-Za-z0-9_-])"  # the token starts here, not inside a longer word
_E = r"(?![A-Za-z0-9_-])"  # and ends here


def entropy(text: str) -> float:
    """Shannon entropy of the characters of `text`, in bits per character."""
    if not text:
        return 0.0
    size = len(text)
    return -sum(n / size * math.log2(n / size) for n in Counter(text).values())


def _segment_is_key(match: re.Match) -> bool:
    # sk-... must hold one key-like segment: 10+ characters mixing letters and digits, or 20+
    # characters of high entropy, so that "sk-learn-compatible" or "sk-spinner-2x" pass.
    for part in re.split(r"[-_]", match.group(1)):
        mixed = any(c.isdigit() for c in part) and any(c.isalpha() for c in part)
        if (len(part) >= 10 and mixed) or (len(part) >= 20 and entropy(part) >= 3.5):
            return True
    return False


def _not_example(match: re.Match) -> bool:
    return not match.group().endswith("EXAMPLE")  # AWS's documented sample key


def _has_digit(match: re.Match) -> bool:
    return any(c.isdigit() for c in match.group())


_TOKENS: tuple[_Rule, ...] = (
    _Rule("private-key", re.compile(
        r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[\s\S]{0,20000}?-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----|[^\n]*)"),
          ("-----BEGIN",)),
    _Rule("aws-access-key", re.compile(r"(?<![A-Za-z0-9])(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)"
                                       r"[A-Z2-7]{16}(?![A-Za-z0-9])"),
          ("AKIA", "ASIA", "ABIA", "ACCA", "A3T"), check=_not_example),
    _Rule("github-token", re.compile(_B + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{22,})"),
          ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    _Rule("gitlab-token", re.compile(_B + r"gl(?:pat|dt|rt|ptt|ft|soat|oas|agent|imt|ffct|cbt)"
                                     r"-[0-9A-Za-z_-]{20,}"),
          ("glpat-", "gldt-", "glrt-", "glptt-", "glft-", "glsoat-", "gloas-", "glagent-",
           "glimt-", "glffct-", "glcbt-")),
    _Rule("anthropic-api-key", re.compile(_B + r"sk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{20,}"),
          ("sk-ant-",)),
    # OpenAI's sk-, sk-proj-, sk-svcacct-... keys, short ones included (see _segment_is_key).
    _Rule("openai-api-key", re.compile(_B + r"sk-([A-Za-z0-9_-]{10,})"),
          ("sk-",), check=_segment_is_key),
    _Rule("stripe-key", re.compile(_B + r"(?:(?:sk|rk)_(?:live|test|prod)_[A-Za-z0-9]{10,}"
                                   r"|whsec_[A-Za-z0-9]{24,})" + _E),
          ("sk_live_", "sk_test_", "sk_prod_", "rk_live_", "rk_test_", "rk_prod_", "whsec_")),
    _Rule("slack-token", re.compile(_B + r"(?:xox[bpeos]-\d{6,}-[0-9A-Za-z-]{8,}"
                                    r"|xox[ar]-(?:\d-)?[0-9A-Za-z]{8,48}"
                                    r"|xapp-\d-[A-Z0-9]+-\d+-[a-z0-9]+)"),
          ("xox", "xapp-"), check=_has_digit),
    _Rule("slack-webhook", re.compile(r"hooks\.slack\.com/(?:services|workflows|triggers)/"
                                      r"[A-Za-z0-9+/]{20,}"), ("hooks.slack.com",)),
    _Rule("google-api-key", re.compile(_B + r"AIza[0-9A-Za-z_-]{35}" + _E), ("AIza",)),
    _Rule("huggingface-token", re.compile(r"(?<![A-Za-z0-9_])(?:hf_[A-Za-z0-9]{20,}"
                                          r"|api_org_[A-Za-z]{34})(?![A-Za-z0-9])"),
          ("hf_", "api_org_")),
    _Rule("npm-token", re.compile(_B + r"npm_[A-Za-z0-9]{36}" + _E), ("npm_",)),
    _Rule("pypi-token", re.compile(r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}"), ("pypi-AgEI",)),
    _Rule("sendgrid-key", re.compile(_B + r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}" + _E),
          ("SG.",)),
    _Rule("twilio-key", re.compile(r"(?<![A-Za-z0-9])SK[0-9a-f]{32}(?![A-Za-z0-9])"), ("SK",)),
    _Rule("telegram-bot-token", re.compile(r"(?<![0-9])\d{8,10}:AA[0-9A-Za-z_-]{33}" + _E),
          (":AA",)),
    _Rule("jwt", re.compile(_B + r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
          ("eyJ",)),
)

# --- values given to secret-looking names ----------------------------------------------------

# A name ending in one of these words looks secret. `key` and `auth` alone are too common
# (dict keys, authors) to count.
_WORDS = (r"api[_-]?key|apikey|access[_-]?key|secret[_-]?key|private[_-]?key|auth[_-]?key"
          r"|client[_-]?secret|secret|token|passw(?:or)?d|pass[_-]?phrase|credentials?")
_SECRET_NAME = re.compile(rf"(?:{_WORDS})$", re.I)
# Where such a name occurs: these lower-case seeds are searched for, the name read around them.
_SEEDS = ("key", "token", "secret", "passw", "credential", "phrase")
_AFTER_NAME = re.compile(
    r"(?P<quote>[\"']?)(?P<pre>[ \t]*)(?P<op>:=|=>|[:=])(?P<post>[ \t]*)"
    r"(?P<value>\"[^\"\n]{0,300}\"|'[^'\n]{0,300}'|[^\s\"',;)\]}>]{1,300})")
_OPERATOR_AHEAD = re.compile(r"[A-Za-z0-9_]*(?=[\"']?[ \t]*(?::=|=>|[:=]))")
_WORDLIKE = re.compile(r"[A-Za-z_.-]+")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_PASSWORD_WORDS = ("password", "passwd", "passphrase", "pass_phrase", "pass-phrase")
# Names whose values are not secrets: tokenizer tokens, pagination cursors, counts.
_HARMLESS_NAME = re.compile(
    r"(?i)(?:^|[_.-]|(?<=[a-z])(?=[A-Z]))(?:eos|bos|pad|unk|sep|cls|mask|start|end|stop|special"
    r"|next|prev|previous|page|continuation|cursor|csrf|xsrf|max|min|num|n)[_.-]?"
    r"(?:" + _WORDS + r")$")
# Values that show a placeholder or a reference rather than a credential.
_PLACEHOLDER = re.compile(
    r"your|xxx|\*\*\*|\.\.\.|[<>{}$%]|example|placeholder|changeme|change_me|dummy|fake|test"
    r"|redacted|secret|passw|here|environ|getenv|process\.env|replace|insert|todo|sample"
    r"|mock|none|null|undefined|true|false|^(?:[^A-Za-z0-9])+$", re.I)


def _assignments(text: str, lowered: str) -> Iterator[Finding]:
    """Literal values given to secret-looking names (``API_KEY = "..."``, ``"password": ...``)."""
    ends: set[int] = set()
    for seed in _SEEDS:
        at = lowered.find(seed)
        while at >= 0:
            # Most occurrences ("key)", "tokens.") are not followed by an operator: one C-level
            # match says so before any Python-level work.
            tail = _OPERATOR_AHEAD.match(text, at + len(seed))
            if tail is not None and tail.end() not in ends:
                ends.add(tail.end())
                found = _assignment_at(text, at, tail.end())
                if found is not None:
                    yield found
            at = lowered.find(seed, at + len(seed))


def _assignment_at(text: str, at: int, end: int) -> Optional[Finding]:
    start = at
    while start > 0 and text[start - 1] in _NAME_CHARS:
        start -= 1
    name = text[start:end].lstrip(".-")
    if not _SECRET_NAME.search(name) or _HARMLESS_NAME.search(name):
        return None
    match = _AFTER_NAME.match(text, end)
    if match is None:
        return None
    raw = match.group("value")
    quoted = raw[:1] in "\"'"
    value = raw[1:-1] if quoted else raw
    if not value or any(c.isspace() for c in value) or _PLACEHOLDER.search(value):
        return None
    password = name.lower().endswith(_PASSWORD_WORDS)
    if not quoted:
        # Unquoted: a literal in shell and .env files (NAME=value); elsewhere (code, YAML,
        # prose) a variable, a call or a word unless it looks like a key itself.
        shell = (name.isupper() and match.group("op") == "=" and not match.group("pre")
                 and not match.group("post"))
        if not shell and (not _token_like(value) or any(c in value for c in ".([")):
            return None
    if password:
        real = len(value) >= 6 and len(set(value)) > 2
    else:
        real = not (len(value) < 8 or value.isdigit()
                    or (len(value) < 20 and _WORDLIKE.fullmatch(value))
                    or entropy(value) < min(3.0, math.log2(len(value)) - 1.0))
    if not real:
        return None
    begin, finish = match.span("value")
    if quoted:
        begin, finish = begin + 1, finish - 1  # keep the quotes: the line still reads
    return Finding("password-assignment" if password else "secret-assignment", begin, finish)


def _token_like(value: str) -> bool:
    """16+ characters mixing letters and digits with high entropy: a key, not a word."""
    return (len(value) >= 16 and any(c.isdigit() for c in value)
            and any(c.isalpha() for c in value) and entropy(value) >= 3.2)


# --- URLs with a password, and Authorization headers --------------------------------------

_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?P<user>[^\s:/@]{1,100}):"
                           r"(?P<secret>[^\s:/@]{1,200})@")
_DEFAULT_PASSWORDS = frozenset(("admin", "root", "postgres", "guest", "pass", "password",
                                "secret", "changeme", "1234", "12345", "123456", "user", "mysql"))
_BEARER = re.compile(r"(?:(?i:bearer)|(?i:authorization)[\"']?[ \t]*[:=][ \t]*[\"']?"
                     r"(?i:token|basic))[ \t]+(?P<secret>[A-Za-z0-9._~+/-]{16,}=*)")


def _url_secret(match: re.Match) -> bool:
    value = match.group("secret")
    return (len(value) >= 6 and value != match.group("user") and value.lower() not in
            _DEFAULT_PASSWORDS and not _PLACEHOLDER.search(value))


def _bearer_secret(match: re.Match) -> bool:
    value = match.group("secret")
    return (not _PLACEHOLDER.search(value) and any(c.isdigit() for c in value)
            and entropy(value) >= 3.5)


_CONTEXT: tuple[_Rule, ...] = (
    _Rule("url-password", _URL_PASSWORD, ("://",), group=2, check=_url_secret),
    _Rule("bearer-token", _BEARER, ("earer", "EARER", "uthorization", "UTHORIZATION"), group=1,
          check=_bearer_secret),
)

# --- e-mail addresses -------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])([A-Za-z0-9._%+-]{1,64})@"
    r"((?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24})(?![A-Za-z0-9-])")
_RESERVED_DOMAINS = ("example.com", "example.org", "example.net")
_RESERVED_TLDS = ("example", "test", "invalid", "localhost", "local")
# Look like an address but are not: image@2x.png, x@self.weight (matrix product), git@host.
_FILE_TLDS = frozenset(("png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "pdf"))
_CODE_HEADS = frozenset(("self", "cls", "this", "np", "torch"))
_ROBOT_USERS = frozenset(("git", "noreply", "no-reply", "donotreply", "do-not-reply"))


def _personal_email(user: str, domain: str) -> bool:
    labels = domain.split(".")
    if labels[-1] in _FILE_TLDS or labels[0] in _CODE_HEADS or user.lower() in _ROBOT_USERS:
        return False
    if domain.endswith(_RESERVED_DOMAINS) or labels[-1] in _RESERVED_TLDS:
        return False
    return not domain.endswith("noreply.github.com")


# --- finding ----------------------------------------------------------------------------------

_ALL = _TOKENS + _CONTEXT
# Rules whose match need not hold a long run of letters and digits run on every text.
_ALWAYS = tuple(rule for rule in _ALL if rule.name in ("private-key", "url-password"))
RULES = tuple(rule.name for rule in _ALL) + ("secret-assignment", "password-assignment",
                                             "email-address")


# Letters, digits and the rest, as bytes that C-level searches read: "a", "0" and " ".
_CLASSES = bytes(ord("a") if chr(c).isascii() and chr(c).isalpha() else ord("0")
                 if chr(c).isascii() and chr(c).isdigit() else ord(" ") for c in range(256))
_LETTERS_20 = b"a" * 20
_MIXED = re.compile(rb"a0|0a")


def _may_hold_token(text: str) -> bool:
    # Every token format holds a run of 10+ letters and digits mixing both, or of 20+ letters
    # (hf_ tokens are letters only): most texts have neither and skip the token rules.
    classes = text.encode("ascii", "replace").translate(_CLASSES)
    if _LETTERS_20 in classes:
        return True
    if b"a0" not in classes and b"0a" not in classes:
        return False
    for match in _MIXED.finditer(classes):
        start = classes.rfind(b" ", 0, match.start()) + 1
        end = classes.find(b" ", match.end())
        if (len(classes) if end < 0 else end) - start >= 10:
            return True
    return False


def find_secrets(text: str) -> Iterator[Finding]:
    """Every secret in `text`, rule by rule (token formats, then assignments, then e-mail)."""
    rules = _ALL if _may_hold_token(text) else _ALWAYS
    for rule in rules:
        if not any(hint in text for hint in rule.hints):
            continue
        for match in rule.pattern.finditer(text):
            if rule.check is None or rule.check(match):
                yield Finding(rule.name, match.start(rule.group), match.end(rule.group))
    lowered = text.lower() if text.isascii() else text.translate(_ASCII_LOWER)
    yield from _assignments(text, lowered)
    if "@" in text:
        for match in _EMAIL.finditer(text):
            if _personal_email(match.group(1), match.group(2).lower()):
                yield Finding("email-address", match.start(), match.end())


def find_secret(text: str) -> Optional[Finding]:
    """The first secret found in `text`, or None."""
    return next(find_secrets(text), None)


def redact(text: str) -> str:
    """`text` with every secret the rules find replaced by ``[redacted]``."""
    spans = sorted((f.start, f.end) for f in find_secrets(text))
    if not spans:
        return text
    out, at = [], 0
    for start, end in spans:
        if end <= at:
            continue  # inside a span already cut
        out.append(text[at:max(at, start)])
        out.append(REDACTED)
        at = end
    out.append(text[at:])
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def redact_short(text: str) -> str:
    """:func:`redact` for short strings that repeat (reasons, field names), cached."""
    return redact(text)


def first_in_fields(fields: Iterable[tuple[str, str]]) -> Optional[tuple[str, int, Finding]]:
    """The first secret in named texts: ``(field, line within it, finding)``, or None."""
    fields = list(fields)
    # One scan of all fields joined (a newline ends every rule's match), then the field it is in.
    joined = "\n".join(text for _, text in fields)
    found = find_secret(joined)
    if found is None:
        return None
    offset = 0
    for field, text in fields:
        if found.start < offset + len(text) + 1:
            local = Finding(found.rule, found.start - offset, found.end - offset)
            return field, text.count("\n", 0, local.start) + 1, local
        offset += len(text) + 1
    return None  # pragma: no cover - a finding lies inside the joined text


def screen(records: Iterable) -> Iterator:
    """The secrets gate: a sample carrying a secret becomes a Reject that does not quote it.

    The reject names the sample's file and line, the rule, and the field and line of the
    sample where the secret is; never the secret or an excerpt around it. Rejects passing
    through have secrets cut from their excerpt, reason and detail; markers pass unchanged.
    """
    from afs_build.data.records import Filtered, Reject
    from afs_build.data.texts import sample_fields

    for item in records:
        if isinstance(item, dict):
            found = first_in_fields(sample_fields(item))
            if found is None:
                yield item
                continue
            field, line, finding = found
            provenance = item.get("provenance") or {}
            yield Reject(item["source"], f"secret: {finding.rule}",
                         file=provenance.get("file") or provenance.get("path"),
                         line=provenance.get("line"),
                         detail={"id": item["id"], "rule": finding.rule, "field": field,
                                 "field_line": line})
        elif isinstance(item, Reject):
            yield _scrubbed(item)
        elif isinstance(item, Filtered):
            yield Filtered(redact_short(item.reason))
        else:
            yield item


def _scrubbed(reject):
    import dataclasses

    from afs_build.data.records import EXCERPT_CHARS

    def clean(value):
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(item) for item in value]
        return value

    excerpt = reject.excerpt
    if len(excerpt) >= EXCERPT_CHARS:
        # A cut excerpt may end inside a key, too short for a rule to know it: drop the tail.
        excerpt = excerpt[:EXCERPT_CHARS]
        cut = max(excerpt.rfind(" "), excerpt.rfind("\n"))
        excerpt = excerpt[:cut] if cut > 0 else ""
    return dataclasses.replace(reject, reason=redact(reject.reason), excerpt=redact(excerpt),
                               detail=clean(reject.detail))
