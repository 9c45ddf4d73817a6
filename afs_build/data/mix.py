"""A specialist's training mix: groups of sources drawn to shares of a target size.

Each group (``expert``, ``general``, ``synthetic``...) has a share and pools of samples by
source; within a group every unique sample is equally likely, so a bigger source gives more.
The target is a number of training samples or of (estimated) tokens. Everything random is
seeded by ``seed`` and the group name, so the same inputs always give the same mix. The
shuffles rank samples by a seeded hash of their id, not by a permutation of their positions:
a source that gains, loses or changes a few samples (a codebase after a commit) moves only
those few in or out of the mix, where a permutation of a pool one sample longer reorders all.

A pool is a list of samples, or a function returning a fresh iterator over them (say
``lambda: read_jsonl(path)``): then the mix reads it twice and keeps only what it draws, so
its memory is a few dozen bytes per pooled sample (the id and, for a token target, a count)
plus the drawn samples. Any other iterable is read into a list first.

Order of work, per group in name order:

1. pool its sources (in source-name order), drop repeated ids, shuffle;
2. hold out the eval split: ``eval_fraction`` of the group's planned size (or of its whole
   pool where that is smaller), taken before any upsampling and never an id already held
   out, so that no eval sample is trained on;
3. draw the training part from what is left. When a group has less than its share asks:

   - ``upsample``: repeat its samples, each the same number of times give or take one, up to
     ``upsample_cap`` times its size; if that is still short, shrink the whole mix as below;
   - ``shrink``: scale every group down by the same factor, so the shares hold;
   - ``fail``: raise :class:`MixError` naming the group, what it has and what it needs.

The statistics report counts and tokens per group and source, the shares asked and realized
(in the target's unit), a 10-bin histogram of quality scores, the reject, dedup and
decontamination counts of the earlier stages as given, and ``warnings``: a group with
samples but none in the eval split (too small for ``eval_fraction``) says so there.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import numpy as np

from afs_build.data.tokens import sample_tokens
from afs_build.errors import StageError, one_of, suggest

SHORTFALLS = ("upsample", "shrink", "fail")
UNITS = ("samples", "tokens")
SHARE_TOLERANCE = 1e-3
SCORE_BINS = 10


# A pool: samples in a list, or a function giving a fresh iterator over them each call.
Pool = Union[Sequence[dict], Callable[[], Iterable[dict]], Iterable[dict]]


class MixError(StageError, ValueError):
    """A mix that cannot be drawn as asked (the message names the group and the fix)."""


@dataclass(frozen=True)
class MixResult:
    """The training list (shuffled, repeats included), the eval list, and the statistics."""

    train: list
    eval: list
    stats: dict


@dataclass
class _Group:
    """One group's pool as positions: entry i is sample ``positions[i]`` of source
    ``sources[i]``; ``order`` is the shuffled entry order once the eval split is out."""

    name: str
    share: float
    ids: list[str] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    tokens: np.ndarray | None = None  # per entry, for the tokens unit
    duplicates: int = 0  # repeated ids left out of the pool
    held: list[int] = field(default_factory=list)  # eval entries
    order: np.ndarray | None = None  # training entries, shuffled
    need: float = 0.0
    drawn: np.ndarray | None = None  # training entries with repeats


def _ranked(ids: Sequence[str], seed: int, *names: str) -> np.ndarray:
    """Positions of `ids` in the order of a seeded hash of each id (and the names): a shuffle
    in which an id keeps its rank whatever else joins or leaves."""
    salt = "\0".join([str(seed), *names]).encode() + b"\0"
    keys = [hashlib.blake2b(salt + i.encode(), digest_size=8).digest() for i in ids]
    return np.array(sorted(range(len(ids)), key=keys.__getitem__), dtype=np.int64)


def mix(pools: Mapping[str, Mapping[str, Pool]], shares: Mapping[str, float], *,
        target: int, unit: str = "samples", seed: int = 0, shortfall: str = "upsample",
        upsample_cap: float = 3.0, eval_fraction: float = 0.0, name: str = "mix",
        rejects: Mapping[str, Any] | None = None, dedup_stats: Mapping[str, Any] | None = None,
        decontam_stats: Mapping[str, Any] | None = None) -> MixResult:
    """Draw the training and eval lists of one specialist; raises MixError.

    ``pools`` maps group -> source -> pool; ``shares`` maps group -> share of the target
    (summing to 1). ``target`` counts training samples, or estimated tokens when ``unit`` is
    ``"tokens"`` (a group then stops at the first sample that reaches its share).
    """
    _check(pools, shares, target, unit, shortfall, upsample_cap, eval_fraction, name)
    names = sorted(shares)
    readers = [[_reader(pools[group][source]) for source in sorted(pools[group])]
               for group in names]
    groups = [_index(group, shares[group], readers[g], unit) for g, group in enumerate(names)]
    needs = _plan(groups, target, unit)
    held: set[str] = set()
    warnings: list[str] = []
    for group, need in zip(groups, needs):
        _hold_out(group, need, eval_fraction, unit, held, _ranked(group.ids, seed, name, "pool", group.name))
        if eval_fraction > 0 and not group.held:
            warnings.append(f"{name}: group {group.name!r} is too small to give the eval split "
                            f"anything ({len(group.ids)} unique samples, eval_fraction "
                            f"{eval_fraction:g}); it has no eval samples: add data to it or "
                            f"raise eval_fraction")
    for group in groups:
        _train_order(group, held)
    scale = _fit(groups, needs, target, unit, shortfall, upsample_cap, name)
    for group in groups:
        group.drawn = _draw(group, unit)
    fetched = _fetch(groups, readers, name)
    train = [(fetched[g, e], g, e) for g, group in enumerate(groups)
             for e in group.drawn.tolist()]
    evals = [(fetched[g, e], g, e) for g, group in enumerate(groups) for e in group.held]
    train = [train[i] for i in _ranked(_occurrences(train), seed, name, "train")]
    evals = [evals[i] for i in _ranked(_occurrences(evals), seed, name, "eval")]
    stats = _stats(groups, [sorted(pools[group]) for group in names], train, evals, unit)
    stats.update(name=name, unit=unit, target=target, seed=seed, shortfall=shortfall,
                 upsample_cap=upsample_cap, eval_fraction=eval_fraction,
                 scale=round(scale, 6), duplicate_ids=sum(g.duplicates for g in groups),
                 rejects=dict(rejects or {}), dedup=dict(dedup_stats or {}),
                 decontam=dict(decontam_stats or {}), warnings=warnings)
    return MixResult([item[0] for item in train], [item[0] for item in evals], stats)


def _reader(pool: Pool) -> Callable[[], Iterable[dict]]:
    """A function giving the pool's samples afresh each call (a one-shot iterable is listed)."""
    if callable(pool):
        return pool
    if not isinstance(pool, Sequence):
        pool = list(pool)
    return lambda: pool


def _check(pools, shares, target, unit, shortfall, upsample_cap, eval_fraction, name) -> None:
    where = name
    if unit not in UNITS:
        raise MixError(f"{where}: unit must be one of {one_of(UNITS)}, got {unit!r}"
                       f"{suggest(unit, UNITS)}")
    if shortfall not in SHORTFALLS:
        raise MixError(f"{where}: shortfall must be one of {one_of(SHORTFALLS)}, got "
                       f"{shortfall!r}{suggest(shortfall, SHORTFALLS)}")
    for group in shares:
        if group not in pools:
            raise MixError(f"{where}: group {group!r} has a share but no pools"
                           f"{suggest(group, pools)}")
    for group in pools:
        if group not in shares:
            raise MixError(f"{where}: group {group!r} has pools but no share"
                           f"{suggest(group, shares)}")
    for group, share in shares.items():
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not share > 0:
            raise MixError(f"{where}: share of group {group!r} must be a number > 0, "
                           f"got {share!r}")
    total = sum(shares.values())
    if not shares or abs(total - 1.0) > SHARE_TOLERANCE:
        raise MixError(f"{where}: shares must sum to 1, got {total:.4g} "
                       f"({', '.join(f'{g}={s:g}' for g, s in sorted(shares.items()))})")
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        raise MixError(f"{where}: target must be a whole number >= 1, got {target!r}")
    if not upsample_cap >= 1.0:
        raise MixError(f"{where}: upsample_cap must be >= 1, got {upsample_cap!r}")
    if not 0.0 <= eval_fraction < 1.0:
        raise MixError(f"{where}: eval_fraction must be in [0, 1), got {eval_fraction!r}")


def _index(name: str, share: float, readers: list, unit: str) -> _Group:
    """First pass: the ids (and token counts) of a group's samples, repeated ids dropped."""
    group = _Group(name, float(share))
    seen: set[str] = set()
    tokens: list[int] = []
    for number, read in enumerate(readers):
        for position, sample in enumerate(read()):
            if sample["id"] in seen:
                group.duplicates += 1
                continue
            seen.add(sample["id"])
            group.ids.append(sample["id"])
            group.sources.append(number)
            group.positions.append(position)
            if unit == "tokens":
                tokens.append(sample_tokens(sample))
    if unit == "tokens":
        group.tokens = np.array(tokens, dtype=np.int64)
    return group


def _plan(groups: list[_Group], target: int, unit: str) -> list[float]:
    """Each group's part of the target; whole samples by largest remainder (sum = target)."""
    exact = [group.share * target for group in groups]
    if unit == "tokens":
        return exact
    whole = [math.floor(value) for value in exact]
    order = sorted(range(len(groups)), key=lambda i: (-(exact[i] - whole[i]), groups[i].name))
    for i in order[:target - sum(whole)]:
        whole[i] += 1
    return [float(value) for value in whole]


def _occurrences(items: list) -> list[str]:
    """Each drawn sample's id and which repeat of it this is (upsampling repeats ids)."""
    count: dict[str, int] = {}
    out = []
    for sample, _, _ in items:
        count[sample["id"]] = count.get(sample["id"], 0) + 1
        out.append(f"{sample['id']}\0{count[sample['id']]}")
    return out


def _hold_out(group: _Group, need: float, fraction: float, unit: str, held: set[str],
              shuffled: np.ndarray) -> None:
    """Take the eval split from the front of the shuffled pool (ids not yet held out)."""
    if unit == "samples":
        want = round(fraction * min(need, len(group.ids)))
    else:
        want = fraction * min(need, float(group.tokens.sum()))
    got = 0.0
    for entry in shuffled.tolist():
        if got >= want:
            break
        if group.ids[entry] not in held:
            group.held.append(entry)
            held.add(group.ids[entry])
            got += group.tokens[entry] if unit == "tokens" else 1
    group.order = shuffled


def _train_order(group: _Group, held: set[str]) -> None:
    """The shuffled entries left for training: none held out for eval by any group."""
    group.order = np.array([entry for entry in group.order.tolist()
                            if group.ids[entry] not in held], dtype=np.int64)


def _have(group: _Group, unit: str) -> float:
    if unit == "samples":
        return float(len(group.order))
    return float(group.tokens[group.order].sum())


def _fit(groups, needs, target, unit, shortfall, cap, name) -> float:
    """Set each group's need, applying the shortfall policy; returns the shrink factor."""
    short = [(group, need) for group, need in zip(groups, needs) if _have(group, unit) < need]
    for group, need in zip(groups, needs):
        group.need = need
    if not short:
        return 1.0
    if shortfall == "fail":
        raise MixError("\n".join(
            f"{name}: group {group.name!r} has {_amount(_have(group, unit), unit)} "
            f"but needs {_amount(need, unit)} (share {group.share:.2f} of "
            f"{_amount(target, unit)}); add data to it, lower its share or the target, "
            f"or change shortfall 'fail' to 'upsample' or 'shrink'"
            for group, need in short))
    factor = cap if shortfall == "upsample" else 1.0
    for group in groups:
        if not _have(group, unit):
            raise MixError(f"{name}: group {group.name!r} has no samples left for "
                           f"training, so shortfall {shortfall!r} would shrink the whole mix "
                           f"to nothing; add data to it or remove the group")
    scale = min(1.0, min(_have(group, unit) * factor / (group.share * target)
                         for group in groups))
    for group, need in zip(groups, needs):
        if scale < 1.0:
            need = group.share * target * scale
            need = float(math.floor(need + 1e-9)) if unit == "samples" else need
        group.need = min(need, _have(group, unit) * factor)
    return scale


def _amount(value: float, unit: str) -> str:
    return f"{int(round(value)):,} {unit}"


def _draw(group: _Group, unit: str) -> np.ndarray:
    """The group's training entries: its shuffled pool, cycled where it must repeat."""
    pool = group.order
    if not len(pool) or group.need <= 0:
        return np.empty(0, dtype=np.int64)
    if unit == "samples":
        count = int(group.need)
    else:
        cumulative = np.cumsum(group.tokens[pool])
        rounds, rest = divmod(group.need, float(cumulative[-1]))
        extra = int(np.searchsorted(cumulative, rest, side="left")) + 1 if rest > 0 else 0
        count = int(rounds) * len(pool) + min(extra, len(pool))
    rounds, rest = divmod(count, len(pool))
    return np.concatenate([np.tile(pool, rounds), pool[:rest]])


def _fetch(groups: list[_Group], readers: list, name: str) -> dict[tuple[int, int], dict]:
    """Second pass: read the drawn and held-out samples, by (group, entry)."""
    fetched: dict[tuple[int, int], dict] = {}
    for g, group in enumerate(groups):
        wanted = np.unique(np.concatenate([group.drawn, np.array(group.held, dtype=np.int64)]))
        by_source: dict[int, dict[int, int]] = {}
        for entry in wanted.tolist():
            by_source.setdefault(group.sources[entry], {})[group.positions[entry]] = entry
        for number, positions in sorted(by_source.items()):
            samples = readers[g][number]()
            if isinstance(samples, Sequence):
                items = ((position, samples[position]) for position in positions)
            else:
                items = ((p, s) for p, s in enumerate(samples) if p in positions)
            for position, sample in items:
                entry = positions[position]
                if sample["id"] != group.ids[entry]:
                    raise MixError(f"{name}: a pool of group {group.name!r} gave "
                                   f"different samples on its second reading (sample "
                                   f"{position} was {group.ids[entry]!r}, now "
                                   f"{sample['id']!r}); pools must read the same each time")
                fetched[g, entry] = sample
    return fetched


def _stats(groups: list[_Group], source_names: list[list[str]], train: list, evals: list,
           unit: str) -> dict:
    tokens_of: dict[tuple[int, int], int] = {}

    def tokens(sample: dict, g: int, entry: int) -> int:
        if (g, entry) not in tokens_of:
            group = groups[g]
            tokens_of[g, entry] = (int(group.tokens[entry]) if group.tokens is not None
                                   else sample_tokens(sample))
        return tokens_of[g, entry]

    group_stats = {group.name: {"share": group.share, "available": len(group.ids),
                                "eval": len(group.held), "samples": 0, "unique": 0,
                                "tokens": 0, "sources": {}} for group in groups}
    sources: dict[str, dict] = {}
    histogram = [0] * SCORE_BINS
    unscored = 0
    for sample, g, entry in train:
        group = groups[g]
        count = tokens(sample, g, entry)
        row_group = group_stats[group.name]
        row_group["samples"] += 1
        row_group["tokens"] += count
        source = source_names[g][group.sources[entry]]
        for table in (row_group["sources"], sources):
            row = table.setdefault(source, {"samples": 0, "tokens": 0, "eval": 0})
            row["samples"] += 1
            row["tokens"] += count
        score = ((sample.get("metadata") or {}).get("quality") or {}).get("score")
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            histogram[min(SCORE_BINS - 1, max(0, int(score * SCORE_BINS + 1e-9)))] += 1
        else:
            unscored += 1
    eval_tokens = 0
    for sample, g, entry in evals:
        group = groups[g]
        eval_tokens += tokens(sample, g, entry)
        source = source_names[g][group.sources[entry]]
        for table in (group_stats[group.name]["sources"], sources):
            table.setdefault(source, {"samples": 0, "tokens": 0, "eval": 0})["eval"] += 1
    total = sum(row[unit] for row in group_stats.values())
    for group in groups:
        row = group_stats[group.name]
        row["unique"] = int(np.unique(group.drawn).size)
        row["repeated"] = row["samples"] - row["unique"]
        row["realized"] = round(row[unit] / total, 4) if total else 0.0
    return {
        "train": {"samples": len(train),
                  "tokens": sum(row["tokens"] for row in group_stats.values())},
        "eval": {"samples": len(evals), "tokens": eval_tokens},
        "groups": group_stats,
        "sources": dict(sorted(sources.items())),
        "scores": {"edges": [round(i / SCORE_BINS, 2) for i in range(SCORE_BINS + 1)],
                   "counts": histogram, "unscored": unscored},
    }
