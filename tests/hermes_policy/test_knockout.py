"""Knockout re-scoring (hermes_policy.knockout): the packed map equals evicting and asking, and leaves the cache be."""

from __future__ import annotations

import pytest
import torch
from conftest import _tiny

from hermes_policy import SessionConfig, SessionError, StreamingSession
from hermes_policy.attention import masked_attention_rows
from hermes_policy.knockout import Knockout, Rescorer, Selection
from hermes_policy.video import SyntheticVideo

QUESTION, OPTIONS = "What colour was the first shape that appeared?", ["red", "green", "blue", "purple"]


def streamed(adapter, seed: int = 3, frames: int = 8) -> StreamingSession:
    session = StreamingSession(adapter, None, SessionConfig(chunk_frames=4))
    session.ingest(list(SyntheticVideo(seed=seed, frames=frames, width=64, height=64).frames()))
    session.flush()
    return session


def frame_units(session: StreamingSession) -> list[int]:
    return sorted(set(session.cache.meta(0).frame.tolist()) - {-1})


def knockouts(session: StreamingSession, patch: bool) -> list[Knockout]:
    units, L = frame_units(session), session.cache.num_layers
    kos = [Knockout((layer,), tuple(units[:2])) for layer in range(L)]  # the oldest frames
    kos += [Knockout((layer,), tuple(units[-2:])) for layer in (0, L - 1)]  # the newest
    kos += [Knockout((L - 1,), None, (1,)), Knockout(tuple(range(L)))]  # one position; everything, everywhere
    if patch:
        kos += [Knockout((0, L - 1), tuple(units[-2:]), patch=True)]
    return kos


def cache_state(session: StreamingSession):
    c = session.cache
    return [(c.keys(i).clone(), c.values(i).clone(), c.positions(i).clone(), c.meta(i).frame.clone())
            for i in range(c.num_layers)]


@pytest.mark.parametrize("name,scoring", [("tiny-embedded", "cloze"), ("tiny-qwen2.5-vl", "letter"),
                                          pytest.param("tiny-llava-ov", "cloze", marks=pytest.mark.slow)])
def test_packed_scores_equal_evicting_and_asking(name, scoring):
    adapter = _tiny(name)
    session, donor = streamed(adapter), streamed(adapter, seed=4)
    before = cache_state(session)
    r = Rescorer(session, QUESTION, OPTIONS, scoring, donor=donor.cache, max_rows=300)  # some layers need 2 packs
    clean = r.clean([Selection(tuple(frame_units(session)[:2]))])
    assert torch.allclose(clean.scores, r._ask(), atol=1e-5)  # the tree layout equals option_logprobs
    kos = knockouts(session, patch=True)
    packed = r.score(kos)
    naive = torch.stack([r.naive(k) for k in kos])
    assert torch.allclose(packed, naive, atol=2e-5), (packed - naive).abs().max()
    assert (naive - clean.scores).abs().max() > 1e-3  # the knockouts do something to compare
    for got, want in zip(cache_state(session), before):  # nothing of the map stays in the cache
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    # packs start at their first layer and share the question's rows: less work than asking each time
    assert r.cost.forwards <= r.cost.naive_forwards and r.cost.row_layers < r.cost.naive_row_layers


def test_a_knockout_of_every_head_is_the_layer_knockout_and_one_head_is_less():
    adapter = _tiny("tiny-embedded")
    session = streamed(adapter)
    r = Rescorer(session, QUESTION, OPTIONS, "cloze")
    clean = r.clean()
    layer_wide = Knockout((0,), None, (2,))
    heads = tuple(range(adapter.num_heads))
    got = r.score([layer_wide, Knockout((0,), None, (2,), heads), Knockout((0,), None, (2,), (0,))])
    assert torch.allclose(got[0], got[1], atol=1e-6)
    assert not torch.allclose(got[2], got[0], atol=1e-6) and not torch.allclose(got[2], clean.scores, atol=1e-7)


class _Capture:
    def __init__(self, layer: int) -> None:
        self.layer, self.event = layer, None

    def observe(self, event) -> None:
        if event.layer == self.layer:
            self.event = event


def test_direct_effect_is_the_heads_output_change_without_the_rows():
    adapter = _tiny("tiny-embedded")
    session = streamed(adapter)
    r = Rescorer(session, QUESTION, OPTIONS, "cloze")
    sel = Selection(tuple(frame_units(session)[-2:]))
    clean = r.clean([sel])
    layer = 1
    capture = _Capture(layer)
    with session.observing(capture):  # the plain question forward: its answer row is the block's
        session.option_logprobs(QUESTION, OPTIONS)
    ev = capture.event
    S, row = session.cache.layer_len(layer), r.block.answer_row
    q, k, v = ev.query[0], ev.key[0], ev.value[0].float()
    mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool).tril(k.shape[1] - q.shape[1])
    hidden = torch.zeros_like(mask)
    hidden[:, :S] = sel.rows(session.cache.meta(layer))
    group = q.shape[0] // k.shape[0]
    probs = [masked_attention_rows(q, k, [row], ev.scaling, m)[:, 0] for m in (mask, mask & ~hidden)]  # (Hq, S')
    o, without = (torch.einsum("hs,hsd->hd", p, v.repeat_interleave(group, 0)) for p in probs)
    want = (without - o).norm(dim=-1) / (o.norm(dim=-1) + without.norm(dim=-1))
    assert torch.allclose(clean.direct[layer, 0], want, atol=1e-4)
    assert torch.allclose(clean.attention[layer, 0], probs[0][:, hidden[row]].sum(-1), atol=1e-5)
    assert ((clean.direct >= 0) & (clean.direct <= 1)).all() and (clean.null >= 0).all()


def test_refusals_are_one_clear_error():
    session = streamed(_tiny("tiny-embedded"))
    with pytest.raises(SessionError, match="cloze or letter"):
        Rescorer(session, QUESTION, OPTIONS, "word-letter")
    r = Rescorer(session, QUESTION, OPTIONS, "cloze")
    with pytest.raises(SessionError, match="donor"):
        r.score([Knockout((0,), patch=True)])
    with pytest.raises(SessionError, match="layers"):
        r.score([Knockout((99,))])
    with pytest.raises(SessionError, match="per-head"):
        r.naive(Knockout((0,), heads=(0,)))
    with pytest.raises(SessionError, match="patching replaces whole"):
        Knockout((0,), heads=(0,), patch=True)
    with pytest.raises(SessionError, match="linear-attention"):
        Rescorer(streamed(_tiny("tiny-qwen3.5")), QUESTION, OPTIONS, "letter")
    other = streamed(_tiny("tiny-embedded"), frames=4)
    with pytest.raises(SessionError, match="does not line up"):
        Rescorer(session, QUESTION, OPTIONS, "cloze", donor=other.cache).score([Knockout((0,), patch=True)])


def test_a_planted_models_answer_never_depends_on_its_cache():
    """Planted output projections are zero (roles live in q/k alone), so every knockout leaves the answer."""
    from hermes_policy.models.planted import build_planted, draw_planted

    adapter = build_planted(draw_planted(3, "embedded"))
    session = streamed(adapter, frames=8)
    r = Rescorer(session, QUESTION, OPTIONS, "letter")
    clean = r.clean([Selection(tuple(frame_units(session)[-2:]))])
    got = r.score([Knockout(tuple(range(session.cache.num_layers)))])
    assert torch.allclose(got[0], clean.scores, atol=1e-6)
    assert clean.direct.max() > 1e-3  # while the heads' outputs do change
