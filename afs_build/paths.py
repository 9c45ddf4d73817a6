"""Where every artifact lives: the only module that computes build paths.

Everything goes under the project's build folder (``project.build_dir``)::

    build/
      .doit.db                      doit's state
      logs/afs.jsonl                JSON-lines log (rotated by size)
      data/ingest/<source>/         samples.jsonl, rejects.jsonl, meta.json
      data/score/<source>/          samples.jsonl, rejects.jsonl, meta.json
      data/mix/<specialist>/        train.jsonl, eval.jsonl, stats.json, rejects.jsonl
      .local-training.lock          held while a training runs on this machine (one at a time)
      models/<model>/               hf/ (a local copy of the base, for embedded models), base.json,
                                    hub/ (a hub model's config and tokenizer files, no weights)
      specialists/<specialist>/     train/: train.py, sky.yaml, checkpoints/, adapter/,
                                    metrics.jsonl, training_summary.json, train.log,
                                    .download/ (SkyPilot: outputs being fetched)
                                    post/: merge.json, <name>-F16.gguf, gguf.json,
                                    <name>-Q8_0.gguf ..., quantize.json
                                    deploy/: Modelfile, lmstudio.sh, preset.json, server.pid,
                                    server.log, deploy.json, lmstudio.json (what afs put in
                                    LM Studio's folder), deploy.lock
                                    eval/: results.jsonl, summary.json
                                    compare/: base.jsonl, quants.jsonl, compare.json,
                                    history.jsonl
                                    screenshots/: actual/, baseline/, diff/ (PNG per question),
                                    pages/ (the HTML drawn), screenshots.json, index.html
      models/<model>/gguf/          the base's own GGUF files, when no specialist serves it
      external/<name>/eval/         results.jsonl, summary.json of a model afs did not build
      reports/family.json           every specialist against its base
      reports/judge/                verdicts.jsonl, pairwise.jsonl, judge.json, feedback.jsonl
      reports/eval/<name>/          report.json, report.md, report.html, categories.png/.svg,
                                    speed.png/.svg (one per model; _family for the family)
      cache/eval/                   replies by served-file digest, messages and sampling
      index/<index>/                chunks.sqlite (chunks, provenance, FTS5), vectors.usearch,
                                    index.json, skipped.jsonl, quality.json
      cache/embeddings/<model>/     embeddings by chunk content digest (embeddings.sqlite)
      cache/quality/<gguf digest>/  token losses of the ifd quality signal by sample text
                                    digest (losses.sqlite)

The generated site lives outside the build folder, in ``site.dir`` (:class:`SiteFiles`).

Names are validated as safe slugs before they get here, so joining them is safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .manifest import Manifest


@dataclass(frozen=True)
class StageFiles:
    """The files one data task writes: samples, rejects and a small sidecar."""

    folder: Path

    @property
    def samples(self) -> Path:
        return self.folder / "samples.jsonl"

    @property
    def rejects(self) -> Path:
        return self.folder / "rejects.jsonl"

    @property
    def meta(self) -> Path:
        return self.folder / "meta.json"


@dataclass(frozen=True)
class MixFiles:
    """The files ``mix:<specialist>`` writes."""

    folder: Path

    @property
    def train(self) -> Path:
        return self.folder / "train.jsonl"

    @property
    def eval(self) -> Path:
        return self.folder / "eval.jsonl"

    @property
    def stats(self) -> Path:
        return self.folder / "stats.json"

    @property
    def rejects(self) -> Path:
        return self.folder / "rejects.jsonl"

    @property
    def context(self) -> Path:
        """What putting retrieved context into the samples did (specialists with train_context)."""
        return self.folder / "context.json"


@dataclass(frozen=True)
class BaseFiles:
    """A base model's folder: the HF copy (embedded models only) and its sidecar report."""

    folder: Path

    @property
    def hf(self) -> Path:
        return self.folder / "hf"

    @property
    def report(self) -> Path:
        return self.folder / "base.json"

    @property
    def hub(self) -> Path:
        """A Hugging Face cache of a hub model's small files (config, tokenizer, template)."""
        return self.folder / "hub"


# Written into an unpacked embedded model's folder (hf/): where it came from.
SOURCE_FILE = "afs_source.json"


@dataclass(frozen=True)
class TrainFiles:
    """What ``render:<specialist>`` and ``train:<specialist>`` write."""

    folder: Path

    @property
    def script(self) -> Path:
        return self.folder / "train.py"

    @property
    def sky_task(self) -> Path:
        return self.folder / "sky.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.folder / "adapter"

    @property
    def metrics(self) -> Path:
        return self.folder / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        """The sidecar later stages depend on (never the adapter weights themselves)."""
        return self.folder / "training_summary.json"

    @property
    def log(self) -> Path:
        return self.folder / "train.log"

    @property
    def staging(self) -> Path:
        """Where outputs fetched from a rented machine land before they move into place."""
        return self.folder / ".download"

    @property
    def outputs(self) -> tuple[Path, ...]:
        """What a finished run leaves (and a rented machine sends back), the summary last."""
        return (self.adapter, self.metrics, self.summary)


@dataclass(frozen=True)
class RemoteTrainFiles:
    """The training folder on a rented machine (SkyPilot), under the remote user's home.

    Names are relative to :attr:`root`, where the run command works; :meth:`home` spells a
    name from the home folder (``~/afs/train.py``) for file mounts.
    """

    root: str = "afs"
    script: str = "train.py"
    train: str = "data/train.jsonl"
    eval: str = "data/eval.jsonl"
    base: str = "base"
    venv: str = "venv"
    out: str = "out"

    def home(self, name: str = "") -> str:
        return f"~/{self.root}/{name}".rstrip("/")


@dataclass(frozen=True)
class PostFiles:
    """What ``merge``, ``gguf`` and ``quantize`` write for one specialist."""

    folder: Path
    name: str

    @property
    def merged(self) -> Path:
        """The merged HF folder afs wrote before it merged while converting; ``merge`` removes it."""
        return self.folder / "merged"

    @property
    def merge_report(self) -> Path:
        """The merge check's report (no weights: the merge happens while the GGUF is written)."""
        return self.folder / "merge.json"

    def gguf(self, kind: str) -> Path:
        """The GGUF file of `kind`: F16, BF16, F32 or a quantization type such as Q8_0."""
        return self.folder / f"{self.name}-{kind}.gguf"

    @property
    def gguf_report(self) -> Path:
        return self.folder / "gguf.json"

    @property
    def quantize_report(self) -> Path:
        return self.folder / "quantize.json"


@dataclass(frozen=True)
class DeployFiles:
    """What ``deploy`` writes for one specialist, and its server's pid file and log."""

    folder: Path

    @property
    def modelfile(self) -> Path:
        return self.folder / "Modelfile"

    @property
    def lmstudio_script(self) -> Path:
        return self.folder / "lmstudio.sh"

    @property
    def preset(self) -> Path:
        return self.folder / "preset.json"

    @property
    def pid(self) -> Path:
        return self.folder / "server.pid"

    @property
    def server_log(self) -> Path:
        return self.folder / "server.log"

    @property
    def report(self) -> Path:
        return self.folder / "deploy.json"

    @property
    def installed(self) -> Path:
        """The files and folders afs put in LM Studio's folder (what cleaning removes)."""
        return self.folder / "lmstudio.json"

    @property
    def lock(self) -> Path:
        """Held while deploying, cleaning or stopping this specialist (one run at a time)."""
        return self.folder / "deploy.lock"

    @property
    def retrieval(self) -> Path:
        """The retrieval settings the server reads (specialists that retrieve)."""
        return self.folder / "retrieval.json"


@dataclass(frozen=True)
class EvalFiles:
    """What ``eval`` writes for one specialist."""

    folder: Path

    @property
    def results(self) -> Path:
        return self.folder / "results.jsonl"

    @property
    def summary(self) -> Path:
        return self.folder / "summary.json"

    @property
    def screenshots(self) -> Path:
        """Rendered answers with their baselines and differences (the site shows what is there)."""
        return self.folder / "screenshots"

    @property
    def without_retrieval(self) -> Path:
        """A retrieving specialist's replies to the same questions with retrieval turned off."""
        return self.folder / "results-no-retrieval.jsonl"

    @property
    def retrieval_effect(self) -> Path:
        """Scores with and without retrieval, per category."""
        return self.folder / "retrieval.json"


@dataclass(frozen=True)
class IndexFiles:
    """What ``index:<name>`` writes, and what ``eval:index:<name>`` measures of it."""

    folder: Path

    @property
    def chunks(self) -> Path:
        """SQLite: the chunks with their provenance, and their FTS5 (BM25) table."""
        return self.folder / "chunks.sqlite"

    @property
    def vectors(self) -> Path:
        """The usearch HNSW index of the chunk embeddings (memory-mapped when searched)."""
        return self.folder / "vectors.usearch"

    @property
    def report(self) -> Path:
        """The sidecar: counts, model, settings digest and the files indexed, with digests."""
        return self.folder / "index.json"

    @property
    def skipped(self) -> Path:
        return self.folder / "skipped.jsonl"

    @property
    def quality(self) -> Path:
        """Recall@k and MRR of lexical, dense and hybrid search on the index's questions."""
        return self.folder / "quality.json"


@dataclass(frozen=True)
class JudgeFiles:
    """What ``judge:family`` writes: every verdict, the judges' reliability and the feedback."""

    folder: Path

    @property
    def verdicts(self) -> Path:
        """One line per verdict asked: judge, answer graded, reply, the verdict read."""
        return self.folder / "verdicts.jsonl"

    @property
    def pairwise(self) -> Path:
        """One line per pairwise verdict (specialist against base, both orders)."""
        return self.folder / "pairwise.jsonl"

    @property
    def report(self) -> Path:
        """Per judge reliability and weight, Krippendorff's alpha, weighted and pairwise scores."""
        return self.folder / "judge.json"

    @property
    def feedback(self) -> Path:
        """Answers reliable judges agreed were wrong: question, bad answer, reference."""
        return self.folder / "feedback.jsonl"


@dataclass(frozen=True)
class ScreenshotFiles:
    """What ``screenshots:<specialist>`` writes: the images, their comparison and a page."""

    folder: Path

    def image(self, kind: str, question_id: str) -> Path:
        """``baseline`` (a copy of the accepted one), ``actual`` or ``diff`` image of a question."""
        return self.folder / kind / f"{question_id}.png"

    def page_source(self, question_id: str) -> Path:
        """The HTML page the reply was drawn from."""
        return self.folder / "pages" / f"{question_id}.html"

    @property
    def report(self) -> Path:
        return self.folder / "screenshots.json"

    @property
    def page(self) -> Path:
        """The HTML comparison page: baseline, actual and difference side by side."""
        return self.folder / "index.html"


@dataclass(frozen=True)
class ReportFiles:
    """One evaluation report (a model's or the family's), at stable paths for the site."""

    folder: Path

    @property
    def json(self) -> Path:
        return self.folder / "report.json"

    @property
    def markdown(self) -> Path:
        return self.folder / "report.md"

    @property
    def html(self) -> Path:
        """Self-contained: styles and charts (SVG) inline."""
        return self.folder / "report.html"

    def chart(self, name: str, ext: str = "png") -> Path:
        """``categories`` (score per category) or ``speed`` (speed against score)."""
        return self.folder / f"{name}.{ext}"


@dataclass(frozen=True)
class CompareFiles:
    """What ``compare`` writes for one specialist: the base's answers, the comparison, history."""

    folder: Path

    @property
    def base_results(self) -> Path:
        """The base's replies to the specialist's questions, with its system prompt."""
        return self.folder / "base.jsonl"

    @property
    def quant_results(self) -> Path:
        """Each quantized file's (and the F16's) replies to the first questions."""
        return self.folder / "quants.jsonl"

    @property
    def report(self) -> Path:
        return self.folder / "compare.json"

    @property
    def history(self) -> Path:
        """One line per specialist version: its scores, kept across rebuilds."""
        return self.folder / "history.jsonl"


@dataclass(frozen=True)
class BaselineFiles:
    """A base model's own GGUF files, served for comparison when no specialist serves it."""

    folder: Path
    name: str

    def gguf(self, kind: str) -> Path:
        return self.folder / f"{self.name}-{kind}.gguf"

    @property
    def report(self) -> Path:
        return self.folder / "baseline.json"

    @property
    def pid(self) -> Path:
        return self.folder / "server.pid"

    @property
    def server_log(self) -> Path:
        return self.folder / "server.log"


@dataclass(frozen=True)
class SiteFiles:
    """The generated site (``site.dir``): MkDocs config and Markdown written by ``site``, and the
    HTML MkDocs builds from them."""

    folder: Path

    @classmethod
    def of(cls, manifest: Manifest) -> "SiteFiles":
        return cls(manifest.resolve(manifest.site.dir))

    @property
    def config(self) -> Path:
        return self.folder / "mkdocs.yml"

    @property
    def docs(self) -> Path:
        """The generated Markdown pages and their assets (MkDocs' docs_dir)."""
        return self.folder / "docs"

    @property
    def assets(self) -> Path:
        return self.docs / "assets"

    @property
    def html(self) -> Path:
        """The built site (MkDocs' site_dir): what a browser loads."""
        return self.folder / "build"

    def page(self, name: str) -> Path:
        """A family page's Markdown (``index``, ``dashboard``, ...)."""
        return self.docs / f"{name}.md"

    def specialist_page(self, name: str) -> Path:
        return self.docs / "specialists" / f"{name}.md"

    def html_of(self, page: Path) -> Path:
        """The HTML file MkDocs builds from a page (``use_directory_urls: false``)."""
        return self.html / page.relative_to(self.docs).with_suffix(".html")


@dataclass(frozen=True)
class Layout:
    """The build folder's layout for one manifest."""

    build: Path

    @classmethod
    def of(cls, manifest: Manifest) -> "Layout":
        return cls(manifest.resolve(manifest.project.build_dir))

    @property
    def state_db(self) -> Path:
        return self.build / ".doit.db"

    @property
    def log_file(self) -> Path:
        return self.build / "logs" / "afs.jsonl"

    @property
    def training_lock(self) -> Path:
        """Held by a training on this machine: two torch jobs on two cores crawl."""
        return self.build / ".local-training.lock"

    def ingest(self, source: str) -> StageFiles:
        return StageFiles(self.build / "data" / "ingest" / source)

    def score(self, source: str) -> StageFiles:
        return StageFiles(self.build / "data" / "score" / source)

    def mix(self, specialist: str) -> MixFiles:
        return MixFiles(self.build / "data" / "mix" / specialist)

    def specialist(self, name: str) -> Path:
        return self.build / "specialists" / name

    def base(self, model: str) -> BaseFiles:
        return BaseFiles(self.build / "models" / model)

    def train(self, specialist: str) -> TrainFiles:
        return TrainFiles(self.specialist(specialist) / "train")

    def post(self, specialist: str) -> PostFiles:
        return PostFiles(self.specialist(specialist) / "post", specialist)

    def deploy(self, specialist: str) -> DeployFiles:
        return DeployFiles(self.specialist(specialist) / "deploy")

    def eval(self, specialist: str) -> EvalFiles:
        return EvalFiles(self.specialist(specialist) / "eval")

    def compare(self, specialist: str) -> CompareFiles:
        return CompareFiles(self.specialist(specialist) / "compare")

    def judge(self) -> JudgeFiles:
        return JudgeFiles(self.build / "reports" / "judge")

    def screenshots(self, specialist: str) -> ScreenshotFiles:
        return ScreenshotFiles(self.specialist(specialist) / "screenshots")

    def model_report(self, name: str) -> ReportFiles:
        """A served model's (or an endpoint's) evaluation report."""
        return ReportFiles(self.build / "reports" / "eval" / name)

    @property
    def family_eval_report(self) -> ReportFiles:
        return ReportFiles(self.build / "reports" / "eval" / "_family")

    def external(self, name: str) -> EvalFiles:
        """What ``afs eval`` writes for a model afs did not build."""
        return EvalFiles(self.build / "external" / name / "eval")

    def baseline(self, model: str) -> BaselineFiles:
        return BaselineFiles(self.build / "models" / model / "gguf", model)

    @property
    def family_report(self) -> Path:
        """The family's comparison table, written by ``report:family``."""
        return self.build / "reports" / "family.json"

    def index(self, name: str) -> IndexFiles:
        return IndexFiles(self.build / "index" / name)

    def embedding_cache(self, model_digest: str) -> Path:
        """Embeddings of one model, keyed by chunk content digest (shared by every index)."""
        return self.cache("embeddings") / model_digest / "embeddings.sqlite"

    def quality_cache(self, model_digest: str) -> Path:
        """A model's token losses for the ifd quality signal, keyed by sample text digest."""
        return self.cache("quality") / model_digest / "losses.sqlite"

    def cache(self, kind: str) -> Path:
        """Shared caches (teacher answers, converted base models), keyed by content inside."""
        return self.build / "cache" / kind
