"""The manifest as frozen dataclasses, parsed once from ``afs.yaml`` and passed explicitly.

:func:`load` reads the YAML (with positions), validates it against
``specs/manifest.schema.json``, fills defaults from the schema, runs the cross-reference checks
of :mod:`afs_build.checks`, and only then builds a :class:`Manifest`. Every user mistake comes
out as one :class:`~afs_build.errors.ManifestError` listing all problems found.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from . import checks, schema, yamlload
from .errors import ManifestError

SCHEMA = "manifest.schema.json"


class FrozenMap(Mapping):
    """An immutable, hashable, picklable mapping with a stable (insertion) order."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping | None = None):
        object.__setattr__(self, "_data", dict(data or {}))

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self) -> Iterator:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __eq__(self, other) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __reduce__(self):
        return (FrozenMap, (self._data,))


@dataclass(frozen=True)
class Project:
    name: str
    description: str
    seed: int
    build_dir: str


@dataclass(frozen=True)
class Teacher:
    base_url: str
    model: str
    api_key_env: Optional[str]
    temperature: float
    max_tokens: int
    timeout: float


@dataclass(frozen=True)
class Model:
    name: str
    hub: Optional[str]
    revision: str
    path: Optional[str]
    embedded: Optional[str]
    params_b: Optional[float]
    description: str

    @property
    def kind(self) -> str:
        """``hub``, ``path`` or ``embedded``."""
        return "hub" if self.hub else "path" if self.path else "embedded"


@dataclass(frozen=True)
class Hardware:
    name: str
    backend: str
    gpu: str
    count: int
    vram_gb: float
    price_per_hour: float
    infra: Optional[str]
    spot: bool
    tokens_per_second: Optional[float]
    overhead_minutes: float
    description: str

    @property
    def is_cpu(self) -> bool:
        return self.gpu.lower() == "cpu"


@dataclass(frozen=True)
class Source:
    """A data source; `settings` holds the keys its kind takes (see the schema)."""

    name: str
    kind: str
    description: str
    license: Optional[str]
    max_chars: int
    settings: FrozenMap

    def input_paths(self) -> tuple[str, ...]:
        """The manifest-relative files (or folder) this source reads."""
        s = self.settings
        if self.kind == "codesearchnet":
            return tuple(s["paths"])
        if self.kind == "synthetic":
            return (s["facts"], s["templates"])
        return (s["path"],) if s.get("path") else ()


@dataclass(frozen=True)
class Group:
    name: str
    share: float
    sources: tuple[str, ...]


@dataclass(frozen=True)
class Mix:
    name: str
    groups: tuple[Group, ...]
    samples: Optional[int]
    tokens: Optional[int]
    eval_fraction: float
    shortfall: str
    upsample_cap: float
    avg_tokens: int

    @property
    def sources(self) -> tuple[str, ...]:
        """Every source the mix reads, in order, once."""
        return tuple(dict.fromkeys(s for g in self.groups for s in g.sources))


@dataclass(frozen=True)
class Lora:
    r: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_tokens: int
    repeat_penalty: float


@dataclass(frozen=True)
class SpecialistRetrieval:
    """A specialist retrieves from `index` before answering (see afs_build/retrieval)."""

    index: str
    top_k: int
    context_chars: int
    train_context: bool
    min_similarity: Optional[float]
    cite: bool


@dataclass(frozen=True)
class Specialist:
    name: str
    role: str
    description: str
    version: int
    base: str
    train: bool
    mix: Optional[str]
    hardware: Optional[str]
    system_prompt: str
    categories: Optional[tuple[str, ...]]
    lora: Lora
    epochs: float
    learning_rate: float
    batch_size: int
    grad_accum: int
    max_seq_len: int
    warmup_ratio: float
    packing: bool
    gradient_checkpointing: bool
    checkpoint_every: int
    base_precision: str
    quantize: tuple[str, ...]
    serve_quant: Optional[str]
    port: int
    context_length: int
    sampling: Sampling
    retrieval: Optional[SpecialistRetrieval]

    @property
    def title(self) -> str:
        """``Majora v1`` for display."""
        return f"{self.name.capitalize()} v{self.version}"


@dataclass(frozen=True)
class Quality:
    threshold: float
    weights: FrozenMap
    workers: typing.Union[int, str]  # a number of scoring processes, or "auto"
    model: Optional[str] = None  # the model whose GGUF scores the ifd signal (models:)

    @property
    def model_signal(self) -> Optional[str]:
        """The model that computes the ifd signal, or None when that signal is off."""
        return self.model if self.model and self.weights.get("ifd", 0) > 0 else None


@dataclass(frozen=True)
class Dedup:
    exact: bool
    near: bool
    threshold: float
    num_perm: int
    shingle: int
    decontaminate: bool


@dataclass(frozen=True)
class Deploy:
    host: str
    lmstudio_dir: str
    publisher: str
    api_key_env: Optional[str]


@dataclass(frozen=True)
class Thresholds:
    min_score: float
    min_tokens_per_second: float


@dataclass(frozen=True)
class ExternalEndpoint:
    """A model afs did not build, on an OpenAI-compatible endpoint (eval.endpoints)."""

    name: str
    base_url: str
    model: str
    api_key_env: Optional[str]
    system_prompt: str
    cache_key: Optional[str]
    concurrency: Optional[int]


@dataclass(frozen=True)
class Screenshots:
    baselines: str
    width: int
    height: int
    font: str
    mono_font: str
    font_size: int
    max_diff_ratio: float
    min_ssim: float
    require_match: bool


@dataclass(frozen=True)
class Eval:
    suite: Optional[str]
    judges: tuple[str, ...]  # "all" in the manifest: every specialist
    max_questions: Optional[int]
    thresholds: Thresholds
    require_beats_base: bool
    general_category: Optional[str]
    quant_questions: Optional[int]
    seed: int
    judge_questions: int
    pairwise_questions: Optional[int]
    judge_grammar: bool
    judge_max_tokens: int
    feedback_min_judges: int
    concurrency: int
    copies: Optional[int]  # None: model_copies decides from the usable cores
    timeout: float
    retries: int
    cache: bool
    endpoints: FrozenMap  # name -> ExternalEndpoint
    screenshots: Screenshots

    @property
    def model_copies(self) -> int:
        """Copies of a served model that answer at once (`copies`, or 2 where 2 cores are usable)."""
        if self.copies is not None:
            return self.copies
        from .cores import model_copies

        return model_copies()


@dataclass(frozen=True)
class Embedding:
    path: Optional[str]
    gguf: Optional[str]
    batch_size: int
    max_tokens: int
    query_prefix: str
    document_prefix: str
    threads: Optional[int]


@dataclass(frozen=True)
class Chunking:
    code_max_lines: int
    code_overlap_lines: int
    prose_max_chars: int
    prose_overlap_chars: int


@dataclass(frozen=True)
class Search:
    mode: str
    candidates: int
    rrf_k: float
    lexical_weight: float
    dense_weight: float
    connectivity: int
    expansion_add: int
    expansion_search: int


@dataclass(frozen=True)
class RetrievalIndex:
    """One retrieval index (``retrieval.indexes.<name>``), built by ``index:<name>``."""

    name: str
    description: str
    sources: tuple[str, ...]
    paths: tuple[str, ...]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    respect_gitignore: bool
    max_file_kb: int
    questions: Optional[str]
    embedding: Embedding
    chunking: Chunking
    search: Search


@dataclass(frozen=True)
class Retrieval:
    indexes: FrozenMap  # name -> RetrievalIndex


@dataclass(frozen=True)
class Site:
    title: str
    dir: str
    url: str
    instant_navigation: bool


@dataclass(frozen=True)
class Manifest:
    """The whole manifest. `file` is the manifest's path; `root` the folder paths are relative to."""

    file: Path
    root: Path
    digest: str
    project: Project
    models: FrozenMap  # name -> Model
    hardware: FrozenMap  # name -> Hardware
    sources: FrozenMap  # name -> Source
    quality: Quality
    dedup: Dedup
    mixes: FrozenMap  # name -> Mix
    specialists: FrozenMap  # name -> Specialist
    deploy: Deploy
    eval: Eval
    site: Site
    retrieval: Retrieval

    def resolve(self, relative: str) -> Path:
        """A manifest-relative path (``~`` expanded) as an absolute path."""
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self.root / path

    @property
    def trained(self) -> tuple[Specialist, ...]:
        """Specialists that are fine-tuned (not served as they are)."""
        return tuple(s for s in self.specialists.values() if s.train)


# --- building -------------------------------------------------------------------------------


def _build(cls: type, data: Mapping, **extra: Any):
    """Instantiate dataclass `cls` from a schema-valid, defaulted mapping."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = dict(extra)
    for field in dataclasses.fields(cls):
        if field.name in kwargs:
            continue
        kwargs[field.name] = _convert(hints[field.name], data[field.name])
    return cls(**kwargs)


def _convert(hint: Any, value: Any) -> Any:
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return _build(hint, value)
    if typing.get_origin(hint) is tuple:
        return tuple(value)
    if typing.get_origin(hint) is typing.Union and value is not None and any(
            typing.get_origin(a) is tuple for a in typing.get_args(hint)):
        return tuple(value)
    if typing.get_origin(hint) is typing.Union and isinstance(value, Mapping):
        for arg in typing.get_args(hint):  # Optional[<dataclass>] given as a mapping
            if dataclasses.is_dataclass(arg):
                return _build(arg, value)
    if hint is FrozenMap:
        return FrozenMap(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(hint) is typing.Union and float in typing.get_args(hint) and isinstance(value, int):
        return float(value)
    return value


def _named(cls: type, section: Mapping, convert=None) -> FrozenMap:
    return FrozenMap({name: (convert or (lambda n, d: _build(cls, d, name=n)))(name, body)
                      for name, body in section.items()})


def _source(name: str, body: Mapping) -> Source:
    common = {"kind", "description", "license", "max_chars"}
    settings = {k: (tuple(v) if isinstance(v, list) else FrozenMap(v) if isinstance(v, dict) else v)
                for k, v in body.items() if k not in common}
    return Source(name=name, kind=body["kind"], description=body["description"],
                  license=body["license"], max_chars=body["max_chars"], settings=FrozenMap(settings))


def _mix(name: str, body: Mapping) -> Mix:
    groups = tuple(Group(g, float(v["share"]), tuple(v["sources"])) for g, v in body["groups"].items())
    return _build(Mix, body, name=name, groups=groups)


def _eval(body: Mapping, specialists: Mapping) -> Eval:
    judges = list(specialists) if body["judges"] == "all" else body["judges"]
    return _build(Eval, body, judges=tuple(judges), endpoints=_named(ExternalEndpoint, body["endpoints"]))


def from_data(data: Mapping, file: Path, digest: str = "") -> Manifest:
    """Build the dataclasses from schema-valid, defaulted data."""
    return Manifest(
        file=file, root=file.parent, digest=digest,
        project=_build(Project, data["project"]),
        models=_named(Model, data["models"]),
        hardware=_named(Hardware, data["hardware"]),
        sources=_named(Source, data["sources"], _source),
        quality=_build(Quality, data["quality"]),
        dedup=_build(Dedup, data["dedup"]),
        mixes=_named(Mix, data["mixes"], _mix),
        specialists=_named(Specialist, data["specialists"]),
        deploy=_build(Deploy, data["deploy"]),
        eval=_eval(data["eval"], data["specialists"]),
        site=_build(Site, data["site"]),
        retrieval=Retrieval(indexes=_named(RetrievalIndex, data["retrieval"]["indexes"])),
    )


def load(path: str | Path, shown: str | None = None) -> Manifest:
    """Read, validate and build the manifest at `path`; raises ManifestError with every problem.

    Messages name the file as `shown` (default: `path` as given).
    """
    file = Path(path).absolute()
    raw, positions = yamlload.load_yaml(file, shown or str(path))
    if not isinstance(raw, dict):
        raise ManifestError(problems=[positions.problem((), f"expected a mapping of sections "
                            f"(project, models, specialists, ...), got {schema._describe(raw)}")])
    root = schema.load_schema(SCHEMA)
    problems = schema.schema_problems(raw, SCHEMA, positions)
    data = schema.apply_defaults(raw, root, root)
    # The cross-reference checks run even when the schema found problems, so the user sees
    # everything at once; a check that meets a malformed section is skipped (checks.py).
    problems += checks.cross_problems(data, positions, file.parent, tolerant=bool(problems))
    if problems:
        raise ManifestError(problems=problems)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    return from_data(data, file, digest)


# --- slices ---------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A JSON-ready copy of a manifest value (dataclasses, FrozenMaps and tuples included)."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
