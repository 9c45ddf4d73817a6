"""Python files read with :mod:`ast`: module, class and function docstrings, signatures,
parameters, class members and how a function works (what it calls, raises, uses and returns,
and the comments in its body), each expression quoted as written in the file."""

from __future__ import annotations

import ast
import functools
import io
import tokenize

from afs_build.data.codebase.common import Definition, clip, sample, split_lines
from afs_build.data.records import Record, Reject


def python_file(source: str, rel: str, text: str, where: str) -> tuple[list[Record], list[Definition]]:
    """The samples about one Python file and the names it defines; a Reject if it does not parse."""
    try:
        tree = ast.parse(text, filename=rel)
        reader = _PythonReader(source, rel, text)
        return reader.module(tree), reader.definitions
    except SyntaxError as exc:
        line = exc.lineno if exc.lineno and exc.lineno > 0 else None
        excerpt = (exc.text or "").strip()
        return [Reject(source, f"Python syntax error: {exc.msg}", file=where, line=line, excerpt=excerpt)], []
    except (RecursionError, MemoryError, ValueError) as exc:  # nested too deeply for ast
        return [Reject(source, f"Python file too deeply nested to read ({type(exc).__name__})",
                       file=where)], []


class _PythonReader:
    """Samples from one parsed Python file; expressions are quoted as written in the file."""

    def __init__(self, source: str, rel: str, text: str):
        self.source, self.rel = source, rel
        self.text = text
        self.lines = split_lines(text)
        self.definitions: list[Definition] = []
        self.constants: dict[str, str] = {}  # module constants with a short value, as written

    def module(self, tree: ast.Module) -> list[Record]:
        rel = self.rel
        records: list[Record] = []
        doc = ast.get_docstring(tree)
        if doc:
            records.append(self._sample(f"What is the Python module `{rel}` for?", clip(doc), line=1,
                                        symbol=None, kind="module", question_type="purpose"))
        for node in tree.body:  # first, so a function above a constant still sees its value
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                value = self._code(node.value)
                if len(value) <= 40 and "\n" not in value:
                    self.constants.update((name, value) for name in _constant_names(node))
        members = []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                members.append(self._member_line(node))
                records.extend(self._symbol(node, node.name))
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                members += [f"- constant `{name}`" for name in _constant_names(node)]
        if members:
            records.append(self._sample(f"What does `{rel}` define?", f"`{rel}` defines:\n" + "\n".join(members),
                                        line=1, symbol=None, kind="module", question_type="contents"))
        return records

    def _sample(self, question: str, answer: str, **fields) -> dict:
        return sample(self.source, question, answer, path=self.rel, language="python", **fields)

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
                                        f"```python\n{header}: ...\n```\n\n{clip(doc)}", question_type="purpose", **about))
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
            out.append(self._sample(f"What does `{qualname}` in `{rel}` do?", f"{block}\n\n{clip(doc)}",
                                    question_type="purpose", **about))
        how = self._behaviour(node, qualname, doc)
        if how:
            out.append(self._sample(f"How does `{qualname}` in `{rel}` work?", how,
                                    question_type="behaviour", **about))
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

    def _behaviour(self, node, qualname: str, doc: str | None) -> str | None:
        """How a function works, in sentences that quote it: its docstring, the comments in its
        body, what it calls, raises, uses (module constants) and returns. None when it says
        too little (fewer than two of those)."""
        calls: dict[str, str] = {}
        raises: dict[str, None] = {}
        used: dict[str, None] = {}  # module constants it reads, in order
        returns = None
        body = [n for n in ast.walk(node) if n is not node and hasattr(n, "lineno")]
        for child in sorted(body, key=lambda n: (n.lineno, n.col_offset)):
            if isinstance(child, ast.Call):
                name = self._code(child.func)
                text = self._code(child)
                if name in _PLAIN_CALLS or name in calls or "\n" in name or any(text in t for t in calls.values()):
                    continue  # a builtin, a repeat, or part of a call already quoted
                calls[name] = text if len(text) <= 48 and "\n" not in text else f"{name}(...)"
            elif isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                raises.setdefault(self._code(exc), None)
            elif isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load) and len(child.id) > 1 \
                    and child.id.isupper():
                used.setdefault(child.id, None)
            elif isinstance(child, ast.Return) and child.value is not None and returns is None:
                text = self._code(child.value)
                if len(text) <= 60 and "\n" not in text and not isinstance(child.value, (ast.Name, ast.Constant)):
                    returns = text
        notes = [self.comments[line] for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)
                 if line in self.comments]
        parts = []
        if doc:
            parts.append(clip(doc, 800))
        if notes:
            parts.append("The code notes: " + "; ".join(f'"{n}"' for n in notes[:4]) + ".")
        if calls:
            parts.append("It calls " + _listing(list(calls.values())[:6]) + ".")
        if raises:
            parts.append("It raises " + _listing(list(raises)[:3]) + ".")
        if used:
            parts.append("It uses " + _listing([f"{name} = {self.constants[name]}" if name in self.constants else name
                                                for name in list(used)[:4]]) + ".")
        if returns:
            parts.append(f"It returns `{returns}`.")
        if len(parts) < 2:
            return None
        return f"`{qualname}` in `{self.rel}` (line {node.lineno}): " + "\n\n".join(parts)

    @functools.cached_property
    def comments(self) -> dict[int, str]:
        """Comment text by line number (tokenized, so a ``#`` inside a string is no comment)."""
        found: dict[int, str] = {}
        try:
            for token in tokenize.generate_tokens(io.StringIO(self.text).readline):
                if token.type == tokenize.COMMENT:
                    text = token.string.lstrip("#").strip()
                    if len(text) > 3 and not text.startswith(("noqa", "type:", "pragma", "pylint", "-*-")):
                        found[token.start[0]] = text
        except (tokenize.TokenError, SyntaxError):  # ast parsed it; tokenize may still give up
            pass
        return found

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


# Builtins too common to say anything about how a function works.
_PLAIN_CALLS = frozenset({"len", "str", "int", "float", "bool", "list", "dict", "set", "tuple", "frozenset",
                          "isinstance", "range", "enumerate", "zip", "sorted", "print", "min", "max", "super",
                          "getattr", "hasattr", "iter", "next", "repr", "type", "any", "all", "sum", "map",
                          "filter", "reversed", "round", "abs"})


def _constant_names(node: ast.Assign | ast.AnnAssign) -> list[str]:
    """The UPPER_CASE names an assignment at module level binds."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper()]


def _listing(items: list[str]) -> str:
    quoted = [f"`{item}`" for item in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _is_static(node) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)
