"""Codebase converter: question/answer samples about a local repository's files and symbols.

This is the seed's "Oracle data": a specialist that knows one codebase. Python files are read
with :mod:`ast` (module, function, method and class docstrings, signatures, parameters, class
members); other languages by their comment structure and a few line regexes (leading comment
block, named functions/labels/sections with the comment right above them); Markdown by its
headings. Every answer quotes the file (a docstring, a comment, a signature or a definition
line); nothing is paraphrased or invented.

"Which file defines `X`?" samples are emitted last, one per name, so that a name defined in
several files gets one answer listing them all rather than contradicting samples.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import pathspec

from afs_build.data.records import Record, Reject, make_sample

LANGUAGES = {
    ".py": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
    ".cs": "csharp", ".go": "go", ".rs": "rust",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell",
    ".asm": "asm65816", ".s": "asm65816",
    ".md": "markdown", ".markdown": "markdown",
}

# Code-fence tag used when an answer quotes a line of the file.
FENCES = {"python": "python", "javascript": "js", "typescript": "ts", "c": "c", "cpp": "cpp",
          "csharp": "csharp", "go": "go", "rust": "rust", "shell": "sh", "asm65816": "asm"}

COMMENT_STYLES = {"javascript": "c", "typescript": "c", "c": "c", "cpp": "c", "csharp": "c",
                  "go": "c", "rust": "c", "shell": "hash", "asm65816": "semicolon"}

_NAME = r"(?P<name>[A-Za-z_]\w*)"
_JS_NAME = r"(?P<name>[A-Za-z_$][\w$]*)"
_JS_EXPORT = r"^\s*(?:export\s+)?(?:default\s+)?"
_C_KEYWORDS = r"(?:return|if|else|for|while|switch|case|do|goto|typedef|sizeof|using)\b"
_CS_MODS = (r"(?:(?:public|private|protected|internal|static|virtual|override|abstract|async|sealed|"
            r"extern|unsafe|partial|readonly)\s+)")
_RUST_VIS = r"^\s*(?:pub(?:\([^)]*\))?\s+)?"

# (symbol kind, pattern with a `name` group), tried in order on each line.
DEFINITIONS: dict[str, tuple[tuple[str, re.Pattern], ...]] = {
    "javascript": (
        ("function", re.compile(rf"{_JS_EXPORT}(?:async\s+)?function\s*\*?\s*{_JS_NAME}")),
        ("class", re.compile(rf"{_JS_EXPORT}(?:abstract\s+)?class\s+{_JS_NAME}")),
        ("function", re.compile(rf"^\s*(?:export\s+)?(?:const|let|var)\s+{_JS_NAME}\s*(?::[^=]+)?=\s*(?:async\s+)?"
                                r"(?:function\b|\([^)]*\)\s*(?::[^=]+)?=>|[A-Za-z_$][\w$]*\s*=>)")),
        ("interface", re.compile(rf"^\s*(?:export\s+)?(?:declare\s+)?interface\s+{_JS_NAME}")),
        ("type", re.compile(rf"^\s*(?:export\s+)?type\s+{_JS_NAME}\s*(?:<[^>]*>)?\s*=")),
    ),
    "c": (
        ("macro", re.compile(rf"^\s*#\s*define\s+{_NAME}")),
        ("struct", re.compile(rf"^\s*(?:typedef\s+)?(?:struct|class|union|enum(?:\s+class)?)\s+{_NAME}\s*(?:[:{{]|$)")),
        # At column 0, a return type before the name, and not a statement keyword.
        ("function", re.compile(rf"^(?!{_C_KEYWORDS})[A-Za-z_][\w:<>,\*&\s]*?[\s\*&](?P<name>~?[A-Za-z_][\w:~]*)"
                                r"\s*\([^=;]*(?:\)\s*(?:const\s*)?(?:noexcept\s*)?(?:\{.*|;)?|,\s*)?$")),
    ),
    "csharp": (
        ("class", re.compile(rf"^\s*{_CS_MODS}*(?:class|struct|interface|enum|record)\s+{_NAME}")),
        ("method", re.compile(rf"^\s*{_CS_MODS}+(?:[\w<>\[\],\.\?]+\s+)?{_NAME}\s*(?:<[^>]*>)?\s*\(")),
    ),
    "go": (
        ("function", re.compile(rf"^func\s+(?:\([^)]*\)\s*)?{_NAME}")),
        ("type", re.compile(rf"^type\s+{_NAME}\b")),
    ),
    "rust": (
        ("function", re.compile(rf"{_RUST_VIS}(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+\"[^\"]*\"\s+)?"
                                rf"fn\s+{_NAME}")),
        ("struct", re.compile(rf"{_RUST_VIS}(?:struct|enum|trait|union|type)\s+{_NAME}")),
        ("macro", re.compile(rf"^\s*macro_rules!\s*{_NAME}")),
    ),
    "shell": (
        ("function", re.compile(r"^\s*function\s+(?P<name>[A-Za-z_][\w:.-]*)\s*(?:\(\s*\))?\s*(?:\{.*)?$")),
        ("function", re.compile(r"^\s*(?P<name>[A-Za-z_][\w:.-]*)\s*\(\s*\)\s*(?:\{.*)?$")),
    ),
    # Global labels only: asar sublabels (.loop), ca65 cheap locals (@loop) and +/- are local.
    "asm65816": (
        ("label", re.compile(rf"^{_NAME}:")),
        ("macro", re.compile(rf"^\s*macro\s+{_NAME}\s*\(", re.IGNORECASE)),  # asar
        ("macro", re.compile(rf"^\s*\.mac(?:ro)?\s+{_NAME}", re.IGNORECASE)),  # ca65, WLA-DX
        ("proc", re.compile(rf"^\s*\.proc\s+{_NAME}", re.IGNORECASE)),
    ),
}
DEFINITIONS["typescript"] = DEFINITIONS["javascript"]
DEFINITIONS["cpp"] = DEFINITIONS["c"]

# Symbol kinds asked about with "What does ... do?"; the rest get "What is ... for?".
ACTIONS = {"function", "method", "macro", "label", "proc"}
# The sample `kind` (metadata) each symbol kind belongs to.
KINDS = {"function": "function", "method": "function", "macro": "function", "proc": "function",
         "class": "class", "struct": "class", "interface": "class", "type": "class",
         "label": "section"}

_ATTRIBUTE = re.compile(r"^\s*#!?\[|^\s*\[[A-Za-z]")  # Rust #[..] and C# [..] between doc and item
_DECORATION = re.compile(r"^[-=*#;/_~+.]{3,}$")
_LICENSE = re.compile(r"copyright|spdx-license|licensed under|permission is hereby granted", re.I)
_SHEBANGS = (("python", re.compile(r"python")), ("shell", re.compile(r"\b(?:ba|z|k|da)?sh\b")))
_HEADING = re.compile(r"^(?P<marks>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

# Long quotes (Markdown sections, huge comments) are cut at a paragraph break near this size.
MAX_QUOTE_CHARS = 2000


class Definition(NamedTuple):
    """A named symbol and where it is, for the "Which file defines X?" samples."""

    name: str
    path: str
    line: int
    language: str
    symbol_kind: str
    excerpt: str


def convert_codebase(
    root,
    *,
    source: str,
    include: Iterable[str] = ("**/*",),
    exclude: Iterable[str] = (),
    max_file_bytes: int = 200_000,
    respect_gitignore: bool = True,
) -> Iterator[Record]:
    """Yield question/answer samples about the files and symbols of a local repository.

    ``include`` and ``exclude`` are gitignore-style patterns relative to ``root``; ``.gitignore``
    files are honoured at every level and ``.git`` is always skipped. Files are visited in
    sorted order, so the output is deterministic.
    """
    base = _root(root)
    definitions: list[Definition] = []
    for rel, is_link in _walk(base, tuple(include), tuple(exclude), respect_gitignore):
        if is_link:
            yield Reject(source, "symbolic link (not followed)", file=(base / rel).as_posix())
            continue
        records, found = _convert_file(base, rel, source, max_file_bytes)
        definitions.extend(found)
        yield from records
    yield from _location_samples(source, definitions)


def iter_files(root, *, include: Iterable[str] = ("**/*",), exclude: Iterable[str] = (),
               respect_gitignore: bool = True) -> Iterator[Path]:
    """The files :func:`convert_codebase` reads, in walk order (for content-based staleness)."""
    base = _root(root)
    for rel, is_link in _walk(base, tuple(include), tuple(exclude), respect_gitignore):
        if not is_link:
            yield base / rel


def _root(root) -> Path:
    base = Path(root)
    if not base.exists():
        raise FileNotFoundError(f"codebase root not found: {root}")
    if not base.is_dir():
        raise NotADirectoryError(f"codebase root is not a folder: {root}")
    return base


def _walk(base: Path, include: tuple, exclude: tuple, respect_gitignore: bool) -> Iterator[tuple[str, bool]]:
    """Yield (path relative to ``base``, whether it is a symbolic link) for each selected entry."""
    wanted = pathspec.GitIgnoreSpec.from_lines(include)
    unwanted = pathspec.GitIgnoreSpec.from_lines(exclude)
    ignores: dict[str, pathspec.GitIgnoreSpec] = {}
    outer = _outer_ignores(base) if respect_gitignore else []
    for folder, dirnames, filenames in os.walk(base):
        here = Path(folder).relative_to(base).as_posix()
        here = "" if here == "." else here
        if respect_gitignore and ".gitignore" in filenames:
            text = (Path(folder) / ".gitignore").read_text(encoding="utf-8", errors="replace")
            ignores[here] = pathspec.GitIgnoreSpec.from_lines(text.splitlines())
        kept = []
        for name in sorted(dirnames):
            rel = f"{here}/{name}" if here else name
            if name == ".git" or _ignored(rel + "/", ignores, outer) or unwanted.match_file(rel + "/"):
                continue
            if os.path.islink(os.path.join(folder, name)):
                yield rel, True  # os.walk would not enter it; say so rather than drop it silently
                continue
            kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = f"{here}/{name}" if here else name
            if _ignored(rel, ignores, outer) or unwanted.match_file(rel) or not wanted.match_file(rel):
                continue
            yield rel, os.path.islink(os.path.join(folder, name))


def _outer_ignores(base: Path) -> list[tuple[str, pathspec.GitIgnoreSpec]]:
    """The .gitignore files above ``base`` in its git repository, outermost first.

    Each comes with ``base``'s path relative to the file's folder, to prefix paths with. When
    ``base`` is not inside a repository (no ``.git`` above it), nothing above it applies.
    """
    here = base.resolve()
    if (here / ".git").exists():
        return []
    found = []
    for folder in here.parents:
        if (folder / ".gitignore").is_file():
            text = (folder / ".gitignore").read_text(encoding="utf-8", errors="replace")
            found.append((here.relative_to(folder).as_posix(), pathspec.GitIgnoreSpec.from_lines(text.splitlines())))
        if (folder / ".git").exists():
            return found[::-1]
    return []


def _ignored(rel: str, ignores: dict[str, pathspec.GitIgnoreSpec],
             outer: list[tuple[str, pathspec.GitIgnoreSpec]]) -> bool:
    """Whether the .gitignore files above ``rel`` ignore it; the deepest matching one wins."""
    verdict = False
    for prefix, spec in outer:
        result = spec.check_file(f"{prefix}/{rel}")
        if result.include is not None:
            verdict = result.include
    parts = rel.rstrip("/").split("/")
    for depth in range(len(parts)):
        folder = "/".join(parts[:depth])
        spec = ignores.get(folder)
        if spec is not None:
            result = spec.check_file(rel[len(folder) + 1:] if folder else rel)
            if result.include is not None:
                verdict = result.include
    return verdict


def _convert_file(base: Path, rel: str, source: str, max_file_bytes: int) -> tuple[list[Record], list[Definition]]:
    """Read one file, check it is usable text and hand it to its language's converter."""
    path = base / rel
    where = path.as_posix()
    try:
        size = path.stat().st_size
        if size > max_file_bytes:
            return [Reject(source, f"file too large: {size} bytes, over max_file_bytes={max_file_bytes}", file=where)], []
        data = path.read_bytes()
    except OSError as exc:
        return [Reject(source, f"cannot read file: {exc.strerror}", file=where)], []
    if b"\0" in data:
        return [Reject(source, "binary file: contains NUL bytes", file=where)], []
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        return [Reject(source, f"not UTF-8 text: {exc.reason} at byte {exc.start}", file=where)], []
    if not text.strip():
        return [Reject(source, "empty file", file=where)], []
    language = _language(rel, text)
    if language is None:
        suffix = Path(rel).suffix
        reason = f"unsupported file type '{suffix}'" if suffix else "unsupported file type (no extension)"
        return [Reject(source, reason, file=where)], []
    if language == "python":
        records, definitions = _python_file(source, rel, text, where)
    elif language == "markdown":
        records, definitions = _markdown_file(source, rel, text), []
    else:
        records, definitions = _text_file(source, rel, text, language)
    if not records and not definitions:
        reason = "nothing to ask about: no docstrings, comments or definitions found"
        return [Reject(source, reason, file=where)], []
    return records, definitions


def _language(rel: str, text: str) -> str | None:
    language = LANGUAGES.get(Path(rel).suffix.lower())
    if language is None and text.startswith("#!"):
        first = text.split("\n", 1)[0]
        language = next((name for name, pattern in _SHEBANGS if pattern.search(first)), None)
    return language


def _sample(source: str, question: str, answer: str, *, path: str, line: int | None,
            symbol: str | None, kind: str, language: str, question_type: str,
            symbol_kind: str | None = None) -> dict:
    provenance: dict = {"path": path}
    if line is not None:
        provenance["line"] = line
    if symbol is not None:
        provenance["symbol"] = symbol
    metadata = {"kind": kind, "language": language, "question_type": question_type}
    if symbol_kind is not None:
        metadata["symbol_kind"] = symbol_kind
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return make_sample(source, messages, provenance=provenance, metadata=metadata)


def _split_lines(text: str) -> list[str]:
    """Lines as compilers and editors number them (str.splitlines also splits on form feeds)."""
    return _LINE_BREAK.split(text)


def _clip(text: str, limit: int = MAX_QUOTE_CHARS) -> str:
    """Cut a long quote at the last paragraph (else line) break before ``limit``."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    cut = head.rfind("\n\n")
    if cut < limit // 2:
        cut = head.rfind("\n")
    return head[:cut].rstrip() if cut > 0 else head.rstrip()


# --- Python -------------------------------------------------------------------------------


def _python_file(source: str, rel: str, text: str, where: str) -> tuple[list[Record], list[Definition]]:
    try:
        tree = ast.parse(text, filename=rel)
    except SyntaxError as exc:
        line = exc.lineno if exc.lineno and exc.lineno > 0 else None
        excerpt = (exc.text or "").strip()
        return [Reject(source, f"Python syntax error: {exc.msg}", file=where, line=line, excerpt=excerpt)], []
    reader = _PythonReader(source, rel, text)
    return reader.module(tree), reader.definitions


class _PythonReader:
    """Samples from one parsed Python file; expressions are quoted as written in the file."""

    def __init__(self, source: str, rel: str, text: str):
        self.source, self.rel = source, rel
        self.lines = _split_lines(text)
        self.definitions: list[Definition] = []

    def module(self, tree: ast.Module) -> list[Record]:
        rel = self.rel
        records: list[Record] = []
        doc = ast.get_docstring(tree)
        if doc:
            records.append(self._sample(f"What is the Python module `{rel}` for?", _clip(doc), line=1,
                                        symbol=None, kind="module", question_type="purpose"))
        members = []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                members.append(self._member_line(node))
                records.extend(self._symbol(node, node.name))
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                members += [f"- constant `{t.id}`" for t in targets if isinstance(t, ast.Name) and t.id.isupper()]
        if members:
            records.append(self._sample(f"What does `{rel}` define?", f"`{rel}` defines:\n" + "\n".join(members),
                                        line=1, symbol=None, kind="module", question_type="contents"))
        return records

    def _sample(self, question: str, answer: str, **fields) -> dict:
        return _sample(self.source, question, answer, path=self.rel, language="python", **fields)

    def _symbol(self, node, qualname: str) -> list[dict]:
        """Samples about one function, method or class (and, for a class, its members)."""
        rel = self.rel
        doc = ast.get_docstring(node)
        where = {"line": node.lineno, "symbol": qualname}
        if isinstance(node, ast.ClassDef):
            header = self._class_header(node)
            self.definitions.append(Definition(qualname, rel, node.lineno, "python", "class", header + ": ..."))
            about = {"kind": "class", "symbol_kind": "class", **where}
            out = []
            if doc:
                out.append(self._sample(f"What is the class `{qualname}` in `{rel}` for?",
                                        f"```python\n{header}: ...\n```\n\n{_clip(doc)}", question_type="purpose", **about))
            methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
            if methods:
                listing = "\n".join(self._member_line(m) for m in methods)
                out.append(self._sample(f"What methods does the class `{qualname}` in `{rel}` have?",
                                        f"`{qualname}` defines these methods:\n{listing}",
                                        question_type="contents", **about))
            fields = [n for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
            if fields:
                listing = "\n".join(f"- `{self._field(f)}`" for f in fields)
                out.append(self._sample(f"What fields does the class `{qualname}` in `{rel}` declare?",
                                        f"`{qualname}` declares these fields:\n{listing}",
                                        question_type="fields", **about))
            for child in node.body:
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    out.extend(self._symbol(child, f"{qualname}.{child.name}"))
            return out
        symbol_kind = "method" if "." in qualname else "function"
        signature = self._signature(node)
        if node.name.startswith("__") and node.name.endswith("__") and node.name != "__init__":
            if not doc:
                return []  # protocol methods are only worth a sample when they say something
        else:
            self.definitions.append(Definition(qualname, rel, node.lineno, "python", symbol_kind, signature + ": ..."))
        about = {"kind": "function", "symbol_kind": symbol_kind, **where}
        block = f"```python\n{signature}: ...\n```"  # a stub, so the block is valid Python
        out = []
        if doc:
            out.append(self._sample(f"What does `{qualname}` in `{rel}` do?", f"{block}\n\n{_clip(doc)}",
                                    question_type="purpose", **about))
        out.append(self._sample(f"What is the signature of `{qualname}` in `{rel}`?", block,
                                question_type="signature", **about))
        parameters = self._parameters(node.args, skip_first=symbol_kind == "method" and not _is_static(node))
        if parameters:
            answer = f"`{qualname}` takes:\n" + "\n".join(parameters)
            if node.returns is not None:
                answer += f"\n\nIt is annotated to return `{self._code(node.returns)}`."
            out.append(self._sample(f"What parameters does `{qualname}` in `{rel}` take?", answer,
                                    question_type="parameters", **about))
        return out

    def _code(self, node: ast.AST) -> str:
        """An expression as written in the file (re-rendered only when it spans lines)."""
        # ast.get_source_segment re-splits the whole file on every call; offsets are UTF-8 bytes.
        if node.lineno != node.end_lineno or node.end_col_offset is None:
            return ast.unparse(node)
        line = self.lines[node.lineno - 1].encode("utf-8")
        return line[node.col_offset:node.end_col_offset].decode("utf-8")

    def _signature(self, node) -> str:
        """The ``def`` line in PEP 8 layout, with its decorators."""
        keyword = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
        text = f"{keyword} {node.name}({', '.join(self._format_args(node.args))})"
        if node.returns is not None:
            text += f" -> {self._code(node.returns)}"
        return "\n".join([f"@{self._code(d)}" for d in node.decorator_list] + [text])

    def _format_args(self, args: ast.arguments) -> list[str]:
        positional = args.posonlyargs + args.args
        defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
        out = [self._format_arg(arg, default) for arg, default in zip(positional, defaults)]
        if args.posonlyargs:
            out.insert(len(args.posonlyargs), "/")
        if args.vararg:
            out.append("*" + self._format_arg(args.vararg, None))
        elif args.kwonlyargs:
            out.append("*")
        out += [self._format_arg(arg, default) for arg, default in zip(args.kwonlyargs, args.kw_defaults)]
        if args.kwarg:
            out.append("**" + self._format_arg(args.kwarg, None))
        return out

    def _format_arg(self, arg: ast.arg, default) -> str:
        if arg.annotation is None:
            return arg.arg + (f"={self._code(default)}" if default is not None else "")
        text = f"{arg.arg}: {self._code(arg.annotation)}"
        return text + (f" = {self._code(default)}" if default is not None else "")

    def _field(self, node: ast.AnnAssign) -> str:
        text = f"{node.target.id}: {self._code(node.annotation)}"
        return text + (f" = {self._code(node.value)}" if node.value is not None else "")

    def _class_header(self, node: ast.ClassDef) -> str:
        bases = [self._code(b) for b in node.bases] + [self._code(k) for k in node.keywords]
        text = f"class {node.name}({', '.join(bases)})" if bases else f"class {node.name}"
        return "\n".join([f"@{self._code(d)}" for d in node.decorator_list] + [text])

    def _member_line(self, node) -> str:
        """One bullet for a listing: the definition and the first line of its docstring."""
        if isinstance(node, ast.ClassDef):
            text = f"- class `{node.name}`"
        else:
            text = f"- `{self._signature(node).splitlines()[-1]}`"
        doc = ast.get_docstring(node)
        return f"{text}: {doc.strip().splitlines()[0]}" if doc else text

    def _parameters(self, args: ast.arguments, *, skip_first: bool) -> list[str]:
        """Bullets for each parameter: name, annotation, default and how it is passed."""
        positional = args.posonlyargs + args.args
        defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
        entries = [(arg, default, "positional-only" if index < len(args.posonlyargs) else None)
                   for index, (arg, default) in enumerate(zip(positional, defaults))]
        if skip_first and entries:
            entries = entries[1:]
        if args.vararg:
            entries.append((args.vararg, None, "extra positional arguments, `*`"))
        entries += [(arg, default, "keyword-only") for arg, default in zip(args.kwonlyargs, args.kw_defaults)]
        if args.kwarg:
            entries.append((args.kwarg, None, "extra keyword arguments, `**`"))
        return [f"- `{self._format_arg(arg, default)}`" + (f" ({how})" if how else "")
                for arg, default, how in entries]


def _is_static(node) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)


# --- other languages: comments and line regexes --------------------------------------------


def _comment_lines(lines: list[str], style: str) -> list[str | None]:
    """For each line, the text of the comment it consists of, or None for a code or blank line."""
    out: list[str | None] = []
    in_block = False
    for number, line in enumerate(lines):
        text = line.strip()
        content: str | None = None
        if style == "c":
            if in_block:
                end = text.find("*/")
                body = text if end < 0 else text[:end]
                in_block = end < 0
                content = body.lstrip("*").strip() if end < 0 or not text[end + 2:].strip() else None
            elif text.startswith("//"):
                content = text[2:].removeprefix("/").removeprefix("!").strip()
            elif text.startswith("/*"):
                body = text[2:]
                end = body.find("*/")
                in_block = end < 0
                if end < 0 or not body[end + 2:].strip():
                    content = (body if end < 0 else body[:end]).lstrip("*!").strip()
        elif style == "hash":
            if text.startswith("#") and not (number == 0 and text.startswith("#!")):
                content = text.lstrip("#").strip()
        elif text.startswith(";"):
            content = text.lstrip(";").strip()
        out.append(content)
    return out


def _join_comment(parts: list[str]) -> str:
    """Comment lines as text: decoration rules dropped, C# XML doc tags turned into prose."""
    kept = [part for part in parts if not _DECORATION.match(part)]
    text = "\n".join(kept).strip()
    text = re.sub(r"</?(?:summary|remarks)>", "", text)
    text = re.sub(r'<param name="(\w+)">(.*?)</param>', r"Parameter `\1`: \2", text)
    text = re.sub(r"<returns>(.*?)</returns>", r"Returns: \1", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _leading_comment(lines: list[str], comments: list[str | None]) -> tuple[str, int] | None:
    """The file's opening comment block (a license block is skipped) and its first line."""
    index = 0
    while index < len(lines):
        if comments[index] is None:
            if lines[index].strip() and not (index == 0 and lines[index].startswith("#!")):
                return None  # code before any usable comment
            index += 1
            continue
        start = index
        block = []
        while index < len(lines) and comments[index] is not None:
            block.append(comments[index])
            index += 1
        text = _join_comment(block)
        if text and not _LICENSE.search(text):
            return text, start + 1
    return None


def _comment_above(lines: list[str], comments: list[str | None], index: int) -> str:
    """The comment block directly above line ``index`` (attributes in between are allowed)."""
    above = index - 1
    while above >= 0 and comments[above] is None and _ATTRIBUTE.match(lines[above]):
        above -= 1
    block = []
    while above >= 0 and comments[above] is not None:
        block.append(comments[above])
        above -= 1
    return _join_comment(block[::-1])


def _text_file(source: str, rel: str, text: str, language: str) -> tuple[list[Record], list[Definition]]:
    lines = _split_lines(text)
    comments = _comment_lines(lines, COMMENT_STYLES[language])
    fence = FENCES[language]
    records: list[Record] = []
    definitions: list[Definition] = []
    common = {"path": rel, "language": language}
    leading = _leading_comment(lines, comments)
    if leading:
        records.append(_sample(source, f"What is `{rel}` for?", _clip(leading[0]), line=leading[1],
                               symbol=None, kind="file", question_type="purpose", **common))
    for index, line in enumerate(lines):
        if comments[index] is not None:
            continue
        found = _match_definition(language, line)
        if found is None:
            continue
        symbol_kind, name = found
        excerpt = line.strip()
        definitions.append(Definition(name, rel, index + 1, language, symbol_kind, excerpt))
        comment = _comment_above(lines, comments, index)
        if comment:
            verb = "What does the {} `{}` in `{}` do?" if symbol_kind in ACTIONS else "What is the {} `{}` in `{}` for?"
            records.append(_sample(source, verb.format(symbol_kind, name, rel),
                                   f"```{fence}\n{excerpt}\n```\n\n{_clip(comment)}", line=index + 1,
                                   symbol=name, kind=KINDS[symbol_kind], question_type="purpose",
                                   symbol_kind=symbol_kind, **common))
    if definitions:
        listing = "\n".join(f"- {d.symbol_kind} `{d.name}` (line {d.line})" for d in definitions)
        records.append(_sample(source, f"What does `{rel}` define?", f"`{rel}` defines:\n{listing}",
                               line=None, symbol=None, kind="file", question_type="contents", **common))
    return records, definitions


def _match_definition(language: str, line: str) -> tuple[str, str] | None:
    for symbol_kind, pattern in DEFINITIONS[language]:
        match = pattern.match(line)
        if match:
            return symbol_kind, match["name"]
    return None


# --- Markdown ------------------------------------------------------------------------------


def _markdown_file(source: str, rel: str, text: str) -> list[Record]:
    """Samples from a Markdown file: its opening paragraph, each section, and its outline."""
    sections: list[tuple[int, str, int, list[str]]] = []  # (level, title, line, body lines)
    preamble: list[str] = []
    in_fence = False
    for number, line in enumerate(_split_lines(text), start=1):
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING.match(line)
        if heading:
            sections.append((len(heading["marks"]), heading["title"], number, []))
        else:
            (sections[-1][3] if sections else preamble).append(line)
    common = {"path": rel, "language": "markdown"}
    records: list[Record] = []
    title = sections[0][1] if sections and sections[0][0] == 1 else None
    opening = _first_paragraph(preamble) or (_first_paragraph(sections[0][3]) if title else "")
    if opening:
        answer = f"{title}\n\n{opening}" if title else opening
        records.append(_sample(source, f"What is `{rel}` for?", _clip(answer), line=1, symbol=None,
                               kind="file", question_type="purpose", **common))
    for level, heading, line, body in sections:
        content = "\n".join(body).strip()
        if content and not (title and heading == title and level == 1):
            records.append(_sample(source, f'What does the section "{heading}" of `{rel}` say?',
                                   _clip(content), line=line, symbol=heading, kind="section",
                                   question_type="section", symbol_kind="heading", **common))
    if len(sections) > 1:
        outline = "\n".join(f"{'  ' * (level - 1)}- {heading}" for level, heading, _, _ in sections)
        records.append(_sample(source, f"What sections does `{rel}` have?", outline, line=None,
                               symbol=None, kind="file", question_type="contents", **common))
    return records


def _first_paragraph(lines: list[str]) -> str:
    paragraph: list[str] = []
    for line in lines:
        if line.strip():
            paragraph.append(line.rstrip())
        elif paragraph:
            break
    return "\n".join(paragraph).strip()


# --- "Which file defines X?" ---------------------------------------------------------------


def _location_samples(source: str, definitions: list[Definition]) -> Iterator[dict]:
    """One sample per defined name; a name defined in several places lists them all."""
    by_name: dict[str, dict[str, Definition]] = {}
    for definition in definitions:
        # A C prototype and its definition in one file count once: the first is kept.
        by_name.setdefault(definition.name, {}).setdefault(definition.path, definition)
    for name in sorted(by_name):
        places = sorted(by_name[name].values(), key=lambda d: (d.path, d.line))
        first = places[0]
        if len(places) == 1:
            fence = FENCES[first.language]
            answer = f"`{name}` is defined in `{first.path}` (line {first.line}):\n\n```{fence}\n{first.excerpt}\n```"
        else:
            listing = "\n".join(f"- `{d.path}` (line {d.line}): `{d.excerpt.splitlines()[-1]}`" for d in places)
            answer = f"`{name}` is defined in {len(places)} places:\n{listing}"
        yield _sample(source, f"Which file defines `{name}`?", answer, path=first.path, line=first.line,
                      symbol=name, kind=KINDS.get(first.symbol_kind, "function"), language=first.language,
                      question_type="location", symbol_kind=first.symbol_kind)
