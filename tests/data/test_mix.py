"""The training mix: shares, shortfall policies, the eval split, and token estimates."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from afs_build.data.mix import MixError, mix
from afs_build.data.records import make_sample
from afs_build.data.tokens import estimate_tokens, sample_tokens

SHARES = {"expert": 0.6, "general": 0.25, "synthetic": 0.15}


def pool(source: str, count: int, words: int = 3) -> list[dict]:
    return [make_sample(source, [{"role": "user", "content": f"question {source} {i}"},
                                 {"role": "assistant", "content": " ".join(["word"] * words)}],
                        provenance={"line": i + 1},
                        metadata={"quality": {"score": (i % 10) / 10 + 0.05}})
            for i in range(count)]


def pools(expert: int = 700, general: int = 400, synthetic: int = 300) -> dict:
    return {"expert": {"docs": pool("docs", expert - expert // 3),
                       "code": pool("code", expert // 3)},
            "general": {"chat": pool("chat", general)},
            "synthetic": {"facts": pool("facts", synthetic)}}


def ids(samples: list[dict]) -> list[str]:
    return [sample["id"] for sample in samples]


def test_shares_are_realized_exactly_in_samples():
    result = mix(pools(), SHARES, target=1000, seed=1)
    groups = result.stats["groups"]
    assert {g: groups[g]["samples"] for g in SHARES} == {"expert": 600, "general": 250,
                                                         "synthetic": 150}
    assert {g: groups[g]["realized"] for g in SHARES} == SHARES
    assert len(result.train) == 1000 and len(set(ids(result.train))) == 1000
    assert groups["expert"]["sources"]["docs"]["samples"] + \
        groups["expert"]["sources"]["code"]["samples"] == 600


def test_largest_remainder_keeps_the_total():
    result = mix(pools(), {"expert": 1 / 3, "general": 1 / 3, "synthetic": 1 / 3}, target=100)
    assert sorted(g["samples"] for g in result.stats["groups"].values()) == [33, 33, 34]
    assert len(result.train) == 100


def test_same_seed_same_mix_other_seed_other_mix():
    first = mix(pools(), SHARES, target=500, seed=7, eval_fraction=0.1)
    again = mix(pools(), SHARES, target=500, seed=7, eval_fraction=0.1)
    other = mix(pools(), SHARES, target=500, seed=8, eval_fraction=0.1)
    assert ids(first.train) == ids(again.train) and ids(first.eval) == ids(again.eval)
    assert first.stats == again.stats
    assert ids(first.train) != ids(other.train)


def test_eval_split_is_disjoint_unique_and_taken_before_upsampling():
    result = mix(pools(general=100), SHARES, target=1000, eval_fraction=0.1)
    train, held = set(ids(result.train)), ids(result.eval)
    assert len(held) == len(set(held)) and not train & set(held)
    assert result.stats["groups"]["general"]["eval"] == 10  # 10% of its 100 samples
    assert result.stats["groups"]["expert"]["eval"] == 60  # 10% of its planned 600
    assert result.stats["eval"]["samples"] == len(held) == 60 + 10 + 15


def test_a_source_in_two_groups_is_never_both_eval_and_train():
    shared = pool("shared", 50)
    result = mix({"a": {"shared": shared}, "b": {"shared": shared}}, {"a": 0.5, "b": 0.5},
                 target=40, eval_fraction=0.25)
    assert not set(ids(result.train)) & set(ids(result.eval))
    assert len(set(ids(result.eval))) == len(result.eval)


def test_upsample_repeats_each_sample_evenly():
    result = mix(pools(general=100), SHARES, target=1000, shortfall="upsample")
    general = [s for s in result.train if s["source"] == "chat"]
    assert len(general) == 250
    assert set(Counter(ids(general)).values()) == {2, 3}
    assert result.stats["groups"]["general"]["unique"] == 100
    assert result.stats["groups"]["general"]["repeated"] == 150
    assert result.stats["scale"] == 1.0


def test_upsample_past_the_cap_shrinks_the_whole_mix():
    result = mix(pools(general=50), SHARES, target=1000, shortfall="upsample", upsample_cap=3)
    groups = result.stats["groups"]
    assert result.stats["scale"] == 0.6  # 150 of the 250 asked
    assert {g: groups[g]["samples"] for g in SHARES} == {"expert": 360, "general": 150,
                                                         "synthetic": 90}
    assert {g: groups[g]["realized"] for g in SHARES} == SHARES


def test_shrink_keeps_the_shares_without_repeats():
    result = mix(pools(general=100), SHARES, target=1000, shortfall="shrink")
    groups = result.stats["groups"]
    assert {g: groups[g]["samples"] for g in SHARES} == {"expert": 240, "general": 100,
                                                         "synthetic": 60}
    assert len(set(ids(result.train))) == len(result.train) == 400


def test_fail_names_the_group_what_it_has_and_needs_and_the_fix():
    with pytest.raises(MixError) as caught:
        mix(pools(general=100), SHARES, target=1000, shortfall="fail", name="snes")
    assert str(caught.value) == (
        "snes: group 'general' has 100 samples but needs 250 samples (share 0.25 of "
        "1,000 samples); add data to it, lower its share or the target, or change shortfall "
        "'fail' to 'upsample' or 'shrink'")


def test_fail_counts_what_is_left_after_the_eval_split():
    with pytest.raises(MixError, match="group 'general' has 190 samples but needs 250"):
        mix(pools(general=200), SHARES, target=1000, shortfall="fail", eval_fraction=0.05)


def test_an_empty_group_cannot_be_shrunk_or_upsampled():
    for policy in ("shrink", "upsample"):
        with pytest.raises(MixError) as caught:
            mix(pools(general=0), SHARES, target=100, shortfall=policy)
        assert str(caught.value) == (
            f"mix: group 'general' has no samples left for training, so shortfall "
            f"'{policy}' would shrink the whole mix to nothing; add data to it or remove the "
            f"group")


def test_token_targets():
    result = mix(pools(), SHARES, target=20_000, unit="tokens")
    groups = result.stats["groups"]
    per_sample = sample_tokens(result.train[0])
    for name, share in SHARES.items():
        assert share * 20_000 <= groups[name]["tokens"] < share * 20_000 + per_sample
    assert result.stats["train"]["tokens"] == sum(g["tokens"] for g in groups.values())
    with pytest.raises(MixError, match=r"group 'general' has [\d,]+ tokens but needs 50,000 "
                                       r"tokens \(share 0.25 of 200,000 tokens\)"):
        mix(pools(), SHARES, target=200_000, unit="tokens", shortfall="fail")


def test_pools_read_twice_give_the_same_mix_as_lists():
    lists = pools()
    lazy = {g: {s: (lambda v=v: iter(v)) for s, v in sources.items()}
            for g, sources in lists.items()}
    assert ids(mix(lazy, SHARES, target=300, eval_fraction=0.1).train) == \
        ids(mix(lists, SHARES, target=300, eval_fraction=0.1).train)
    readings = iter([pool("x", 20), pool("y", 20)])
    with pytest.raises(MixError, match="gave different samples on its second reading"):
        mix({"all": {"x": lambda: next(readings)}}, {"all": 1.0}, target=10)


def test_stats_histogram_and_passed_in_counts():
    result = mix(pools(), SHARES, target=1000, rejects={"quality": 12},
                 dedup_stats={"exact_duplicates": 3}, decontam_stats={"contaminated": 1})
    scores = result.stats["scores"]
    assert sum(scores["counts"]) == 1000 and scores["unscored"] == 0
    assert scores["edges"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert result.stats["rejects"] == {"quality": 12}
    assert result.stats["dedup"] == {"exact_duplicates": 3}
    assert result.stats["decontam"] == {"contaminated": 1}
    assert result.stats["sources"]["chat"]["samples"] == 250


def test_repeated_ids_in_a_pool_are_dropped():
    chat = pool("chat", 10)
    result = mix({"all": {"chat": chat + chat[:4]}}, {"all": 1.0}, target=10)
    assert result.stats["duplicate_ids"] == 4 and len(set(ids(result.train))) == 10


@pytest.mark.parametrize("kwargs, message", [
    ({"shares": {"expert": 0.6, "general": 0.25, "synthetic": 0.1}},
     "mix: shares must sum to 1, got 0.95 (expert=0.6, general=0.25, synthetic=0.1)"),
    ({"shares": {"expert": 0.6, "generall": 0.25, "synthetic": 0.15}},
     "mix: group 'generall' has a share but no pools (did you mean 'general'?)"),
    ({"shortfall": "upsampel"},
     "mix: shortfall must be one of 'fail', 'shrink', 'upsample', got 'upsampel' "
     "(did you mean 'upsample'?)"),
    ({"unit": "token"},
     "mix: unit must be one of 'samples', 'tokens', got 'token' "
     "(did you mean 'tokens'?)"),
    ({"target": 0}, "mix: target must be a whole number >= 1, got 0"),
    ({"eval_fraction": 1.0}, "mix: eval_fraction must be in [0, 1), got 1.0"),
])
def test_arguments_are_checked(kwargs, message):
    arguments = {"shares": SHARES, "target": 100, **kwargs}
    with pytest.raises(MixError) as caught:
        mix(pools(), arguments.pop("shares"), **arguments)
    assert str(caught.value) == message


def test_estimate_tokens():
    assert estimate_tokens("") == 0
    assert estimate_tokens("hello world") == 3  # 2 words x 1.3
    assert estimate_tokens("x = f(a, b)") == 9  # 4 words x 1.3 + 4 symbols
    assert estimate_tokens("   \n\t") == 0
    assert estimate_tokens("h\u00e9llo w\u00f6rld!") == 4  # the regex path for non-ASCII


@pytest.mark.parametrize("text", ["def f(x):\n    return x**2  # square", "a\x1cb_c\x0bd;",
                                  "Hello, World... it's 42!"])
def test_estimate_tokens_ascii_shortcut_counts_like_the_regex(text):
    pieces = re.findall(r"(\w+)|[^\w\s]", text)
    symbols = pieces.count("")
    assert estimate_tokens(text) == int((len(pieces) - symbols) * 1.3 + symbols + 0.5)


def test_sample_tokens_counts_messages_calls_and_tools():
    plain = pool("s", 1)[0]
    assert sample_tokens(plain) == 2 * 4 + estimate_tokens("question s 0") + \
        estimate_tokens("word word word")
    known = make_sample("s", [{"role": "user", "content": "hi"}], provenance={"line": 1},
                        metadata={"tokens": 42})
    assert sample_tokens(known) == 42
    tools = make_sample("s", [{"role": "user", "content": "weather?"},
                              {"role": "assistant", "content": "",
                               "tool_calls": [{"name": "weather", "arguments": {"city": "Oslo"}}]}],
                        provenance={"line": 1}, tools=[{"name": "weather"}])
    assert sample_tokens(tools) > sample_tokens(make_sample(
        "s", [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": ""}],
        provenance={"line": 1}))


def test_a_source_that_changes_a_little_changes_the_mix_a_little():
    """A codebase after a commit: 10 of 600 samples changed and 5 added. The mix of 100 keeps
    all but the few it drew of those (a permutation of positions would redraw nearly all)."""
    before = pool("code", 600)
    after = [s if i % 60 else make_sample("code", [{"role": "user", "content": f"changed {i}"},
                                                   {"role": "assistant", "content": "word"}], provenance={"line": i + 1})
             for i, s in enumerate(before)] + pool("new", 5)
    shares = {"expert": 1.0}
    first = mix({"expert": {"code": before}}, shares, target=100, seed=3, eval_fraction=0.1)
    second = mix({"expert": {"code": after}}, shares, target=100, seed=3, eval_fraction=0.1)
    kept = set(ids(first.train)) & set(ids(second.train))
    assert len(kept) >= 100 - 2 * 15 * 100 // 600 - 2  # at most those drawn of the 15 changed or new
    assert set(ids(first.eval)) & set(ids(second.eval))
    assert not set(ids(second.eval)) & set(ids(second.train))
