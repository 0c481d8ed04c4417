"""hermes-lab's ``hermes`` policy against HERMES as released (LLaVA-OneVision online inference).

The fixture holds what the release's own pruning code did on small random inputs, chunk after chunk:
which rows each layer kept, at which positions, with which scores, and the keys and values it ended with
(``fixtures/hermes_release.json`` names the repository, commit, files and functions). The policy, with
its default options, must do the same on the same inputs.
"""

from __future__ import annotations

import pytest
import torch
from conformance_fixtures import load, qwen2_rotary, write

from hermes_policy.cache import CompactCache
from hermes_policy.policies import make_policy
from hermes_policy.policies.hermes import DEFAULT_GAMMA, SUMMARY_FRAME, HermesPolicy, fixed_layers
from hermes_policy.tokens import TokenMeta

pytestmark = pytest.mark.conformance

DOC, T = load("hermes_release")
STREAMS = ("lazy", "eager", "ties", "exact", "tiny", "roomy")
FRAME_TOKENS = 4
TIER_NAMES = {"short-term": "sensory", "mid-term": "working", "long-term": "long-term"}


def chunk_meta(chunk: int, n: int) -> TokenMeta:
    per_chunk = n // FRAME_TOKENS
    frames = range(chunk * per_chunk, (chunk + 1) * per_chunk)
    return TokenMeta.cat([TokenMeta.frame_tokens(f, float(f), 0, FRAME_TOKENS) for f in frames])


def replay(name: str, chunks: int | None = None, **options) -> tuple[CompactCache, list[dict]]:
    """Stream the fixture's chunks (the first ``chunks``) through the ``hermes`` policy; per chunk, what it
    held and scored."""
    meta = DOC["scenarios"][name]
    L, P, n = meta["num_layers"], meta["prefix"], meta["chunk_tokens"]
    t = {k.split("/", 1)[1]: v for k, v in T.items() if k.startswith(name + "/")}
    cache = CompactCache(L, qwen2_rotary(meta["rope_base"], meta["head_dim"], meta["max_position_embeddings"]))
    policy = make_policy("hermes", budget=meta["kv_size"], **options)
    write(cache, torch.arange(P)[None], TokenMeta.text(P), [t[f"prefix.k.{i}"] for i in range(L)],
          [t[f"prefix.v.{i}"] for i in range(L)])
    seen = []
    for c in range(meta["chunks"] if chunks is None else chunks):
        start = cache.next_position  # the session's clock once tails are on (StreamingSession._ingest_pending)
        positions = torch.arange(start, start + n)[None]
        write(cache, positions, chunk_meta(c, n), [t[f"chunk{c}.k.{i}"] for i in range(L)],
              [t[f"chunk{c}.v.{i}"] for i in range(L)])
        starts = [int(cache.positions(i)[0, -n]) for i in range(L)]
        before = [cache.positions(i) for i in range(L)]
        attention = {(i, q): t[f"chunk{c}.attn.{q}.{i}"] for i in range(L) for q in ("global", "mixed")}
        scores = policy.prune(cache, attention)
        evicted = any(cache.positions(i) is not p for i, p in enumerate(before))  # as the session tells
        if evicted and not meta["streaming"]:
            cache.reindex_all()  # the session's eager re-index (offline), after a chunk that evicted
        seen.append({"starts": starts, "scores": scores, "evicted": evicted,
                     "positions": [cache.positions(i)[0].tolist() for i in range(L)]})
    return cache, seen


@pytest.mark.parametrize("name", STREAMS)
def test_a_stream_keeps_the_released_rows_at_the_released_positions(name):
    meta = DOC["scenarios"][name]
    cache, seen = replay(name)
    for step, got in zip(meta["steps"], seen):
        c = step["chunk"]
        assert got["starts"] == step["start_positions"], f"chunk {c}: each layer continues from its own last row"
        assert got["evicted"] == step["pruned"], f"chunk {c}: pruned when the release pruned"
        assert got["positions"] == step["positions_after"], f"chunk {c}: rows kept, and where they sit"
        for layer in range(meta["num_layers"]):
            where = f"chunk {c} layer {layer} scores"
            torch.testing.assert_close(got["scores"][layer], T[f"{name}/chunk{c}.score.{layer}"], atol=2e-6, rtol=0,
                                       msg=lambda m, where=where: f"{where}: {m}")
    for layer in range(meta["num_layers"]):
        torch.testing.assert_close(cache.keys(layer), T[f"{name}/final.k.{layer}"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cache.values(layer), T[f"{name}/final.v.{layer}"], atol=1e-6, rtol=0)


def test_long_term_layers_end_each_prune_with_a_new_summary_row():
    cache, _ = replay("lazy")
    short, long = DOC["scenarios"]["lazy"]["short_term_threshold"], DOC["scenarios"]["lazy"]["long_term_threshold"]
    for layer in range(cache.num_layers):
        last = int(cache.meta(layer).frame[-1])
        assert (last == SUMMARY_FRAME) == (layer >= long), f"layer {layer} (tiers {short}/{long})"
        budget = DOC["scenarios"]["lazy"]["kv_size"]
        candidates = int((cache.meta(layer).frame != -1).sum())
        assert candidates == budget, "a summary row takes one place of the budget"


def test_hermes_lab_variants_are_not_the_release():
    """The named options that are hermes-lab's own do differ from the release, so the fixture can tell.

    Only the first chunks are replayed: once a variant holds other rows, the release's attention (one value
    per row it held) no longer fits."""
    steps = DOC["scenarios"]["lazy"]["steps"]
    _, seen = replay("lazy", chunks=2, summary_mode="slot")  # the first prune already differs
    assert seen[1]["positions"] != steps[1]["positions_after"]
    _, seen = replay("tiny", chunks=2, positions="stream")  # after a prune that lost layers' newest rows
    assert seen[1]["starts"] != DOC["scenarios"]["tiny"]["steps"][1]["start_positions"]


def test_unequal_layers_are_smoothed_and_kept_as_released():
    meta = DOC["scenarios"]["unequal"]
    L, P = meta["num_layers"], meta["prefix"]
    cache = CompactCache(L, qwen2_rotary(1e6, 8, 32768))
    most = max(meta["rows"])  # write the longest layer's rows everywhere, then cut each layer to its length
    frames = TokenMeta.cat([TokenMeta.text(P)] + [TokenMeta.frame_tokens(i, float(i), 0, 1) for i in range(most - P)])
    write(cache, torch.arange(most)[None], frames, [torch.zeros(1, 1, most, 8)] * L, [torch.zeros(1, 1, most, 8)] * L)
    for layer, rows in enumerate(meta["rows"]):
        cache.evict(layer, torch.arange(rows))
    attention = {(i, q): T[f"unequal/attn.{q}.{i}"] for i in range(L) for q in ("global", "mixed")}
    scores = make_policy("hermes", budget=meta["kv_size"]).prune(cache, attention)
    for layer in range(L):
        torch.testing.assert_close(scores[layer], T[f"unequal/score.{layer}"], atol=2e-6, rtol=0)
        kept = cache.positions(layer)[0].tolist()
        if layer >= int(L * 0.7):  # the new summary row, one past the last kept row
            assert int(cache.meta(layer).frame[-1]) == SUMMARY_FRAME and kept[-1] == kept[-2] + 1
            kept = kept[:-1]
        assert kept == meta["keep_rows"][layer]


@pytest.mark.parametrize("key", sorted(DOC["tiers"]))
def test_fixed_split_is_the_released_split(key):
    family, n = key.split("/")
    ours = fixed_layers(int(n), family)
    for theirs, mine in zip(DOC["tiers"][key], ours, strict=True):
        assert mine["tier"] == TIER_NAMES[theirs["tier"]], f"layer {mine['layer']}"
        assert mine["alpha"] == pytest.approx(theirs["alpha"], abs=1e-12)
        if mine["alpha"] > 0:
            assert mine["k"] == pytest.approx(theirs["k"], abs=1e-12)
        if theirs["gamma"] is not None:
            assert DEFAULT_GAMMA[mine["tier"]] == theirs["gamma"]


def test_the_defaults_are_the_release():
    policy = HermesPolicy(budget=8)
    assert {name: getattr(policy, name) for name in HermesPolicy.RELEASE} == HermesPolicy.RELEASE
