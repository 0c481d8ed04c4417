"""probes/: observed attention rows are eager attention; reducers, recordings, capture."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import _tiny, close
from oracles import full_sequence

from hermes_policy import SessionConfig, StreamingSession
from hermes_policy.tokens import TokenMeta
from hermes_policy.video import open_video
from probes.capture import PSEUDO_PROMPTS, StudyConfig, capture
from probes.observer import AttentionProbe, attached
from probes.recording import Recording, RecordingError
from probes.reducers import lag_autocorrelation, reduce_rows


class RowGrabber:
    def __init__(self, phase: str):
        self.phase, self.rows = phase, {}

    def observe(self, event):
        if event.phase == self.phase:
            self.rows[event.layer] = event.attention()


def test_recomputed_rows_match_eager_attention(tiny, frames):
    """The rows an observer gets equal the eager attention weights of one full HF forward."""
    session = StreamingSession(tiny, config=SessionConfig(chunk_frames=4))
    session.ingest(frames[:8])
    grab = RowGrabber("ask")
    with attached(session, grab):
        session.question_logits("Where is the circle?")
    seq, n_question = full_sequence(tiny, session, frames[:8], "Where is the circle?")
    tiny.set_attention("eager")
    try:
        with torch.no_grad():
            # the decoder stack with whatever the full model adds to it (Qwen3-VL's DeepStack features)
            out = tiny.text_model(inputs_embeds=seq.embeds[None], position_ids=tiny.position_ids(seq.positions),
                                  output_attentions=True, use_cache=False, **tiny.forward_kwargs(seq))
    finally:
        tiny.set_attention("hermes")
    assert len(grab.rows) == tiny.num_layers
    for layer, ours in grab.rows.items():
        eager = out.attentions[layer][0, :, -n_question:, :]  # (H, r, S)
        assert ours.shape == eager.shape
        assert close(ours, eager, atol=1e-5), (layer, (ours - eager.float()).abs().max())


def _meta(frames_per: list[int], tokens_per_frame: int, prefix: int) -> TokenMeta:
    parts = [TokenMeta.text(prefix)]
    parts += [TokenMeta.frame_tokens(f, f / 2, 0, tokens_per_frame) for f in frames_per]
    return TokenMeta.cat(parts)


def test_reducers_on_known_patterns():
    meta = _meta([0, 1, 3], tokens_per_frame=4, prefix=2)  # frame 2 was evicted
    s = len(meta)
    att = torch.zeros(2, 1, s)
    att[0, 0, :2] = 0.25  # head 0: half on the two sink tokens...
    att[0, 0, 2:] = 0.5 / 12  # ...and uniform over the 12 video tokens
    att[1, 0, 2 + 8] = 1.0  # head 1: everything on frame 3, position 0
    r = reduce_rows(att.mean(dim=1), meta, num_frames=4, tokens_per_frame=4)
    assert torch.allclose(r.sink_mass, torch.tensor([0.5, 0.0]))
    assert torch.allclose(r.frame_mass[0, [0, 1, 3]], torch.full((3,), 1 / 3))
    assert math.isnan(r.frame_mass[0, 2]) and math.isnan(r.frame_mass[1, 2])
    assert torch.allclose(r.frame_mass[1, [0, 1, 3]], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(r.position_mass[1], torch.tensor([1.0, 0, 0, 0]))
    assert torch.allclose(r.entropy, torch.tensor([math.log(12), 0.0]), atol=1e-5)


def test_lag_autocorrelation():
    periodic = torch.tensor([[1.0, 0, 0, 0] * 6])
    assert torch.allclose(lag_autocorrelation(periodic, 4), torch.tensor([1.0]))
    assert lag_autocorrelation(periodic, 2).item() < 0
    assert math.isnan(lag_autocorrelation(torch.ones(1, 3), 4).item())


def test_capture_records_every_step_and_round_trips(tmp_path):
    adapter = _tiny("tiny-embedded")
    source = open_video("synthetic:seed=4,frames=10,size=64x64")
    rec = capture(adapter, source, StudyConfig(queries="both", chunk_frames=4, raw_steps=1), progress=False)
    steps = rec["steps.frames"].tolist()
    assert steps == [4, 8, 10]
    assert rec.queries == ["local", "global", "mixed", "newest-frame"]
    fm = rec["frame_mass", 2]
    assert fm.shape == (3, 4, adapter.num_heads, 10)
    # normalised over video tokens at every step, and frames not yet streamed are NaN
    assert torch.allclose(torch.nansum(fm, dim=-1), torch.ones(3, 4, adapter.num_heads), atol=1e-5)
    assert torch.isnan(fm[0, :, :, 4:]).all() and not torch.isnan(fm[0, :, :, :4]).any()
    assert rec["rows", 0].shape[0] == 1
    assert rec.stack("entropy").shape == (adapter.num_layers, 3, 4, adapter.num_heads)
    assert rec.meta["prompts"] == PSEUDO_PROMPTS and rec.meta["video"].startswith("synthetic:seed=4")

    rec.save(tmp_path / "study")
    back = Recording.load(tmp_path / "study")
    assert back.meta == rec.meta
    for name in rec.names():
        assert torch.equal(torch.nan_to_num(back[name], 7.0), torch.nan_to_num(rec[name], 7.0))


def test_newest_frame_rows_are_the_newest_frame_only():
    adapter = _tiny("tiny-embedded")
    probe = AttentionProbe(["newest-frame"], adapter.num_layers, adapter.num_heads, tokens_per_frame=4)
    seen = []
    original = probe.observe

    def spy(event):
        for _, rows in probe._wanted(event):
            seen.append((event.n_query, rows))
        original(event)

    probe.observe = spy
    session = StreamingSession(adapter, config=SessionConfig(chunk_frames=3))
    with attached(session, probe):
        probe.begin_step(3, 1.0)
        session.ingest(open_video("synthetic:seed=1,frames=3,size=64x64").frames())
    assert session.observers == ()
    n_query, rows = seen[0]
    assert n_query == 12 and rows == [8, 9, 10, 11]


def test_bad_recordings_are_clear_errors(tmp_path):
    with pytest.raises(RecordingError, match="not a recording"):
        Recording.load(tmp_path)
    (tmp_path / "recording.json").write_text("{oops")
    (tmp_path / "recording.safetensors").write_bytes(b"garbage")
    with pytest.raises(RecordingError, match="not valid JSON"):
        Recording.load(tmp_path)
    (tmp_path / "recording.json").write_text('{"format": "hermes-lab/recording", "version": 1}')
    with pytest.raises(RecordingError, match="corrupt"):
        Recording.load(tmp_path)


def test_failed_save_leaves_previous_recording_intact(tmp_path, monkeypatch):
    rec = capture(_tiny("tiny-embedded"), open_video("synthetic:seed=1,frames=4,size=64x64"), progress=False)
    rec.save(tmp_path / "r")
    before = (tmp_path / "r" / "recording.safetensors").read_bytes()
    import probes.recording as module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(module, "save_file", broken)
    with pytest.raises(OSError):
        rec.save(tmp_path / "r")
    assert (tmp_path / "r" / "recording.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"], "no staging directory left behind"


class TaggedGrabber:
    def __init__(self):
        self.rows = {}

    def observe(self, event):
        if event.phase != "probe":
            return
        for seg in event.segments:
            self.rows[(seg.tag, event.layer)] = event.attention(list(range(seg.start, seg.stop)))


def test_packed_pseudo_queries_equal_separate_forwards(tiny, frames):
    """Segments in one forward see the cache and themselves only: same rows as one forward each."""
    session = StreamingSession(tiny, config=SessionConfig(chunk_frames=4))
    session.ingest(frames[:6])
    session.flush()
    packed, single = TaggedGrabber(), TaggedGrabber()
    with attached(session, packed):
        session.pseudo_queries(PSEUDO_PROMPTS)
    with attached(session, single):
        for tag, prompt in PSEUDO_PROMPTS.items():
            session.pseudo_queries({tag: prompt})
    assert packed.rows.keys() == single.rows.keys()
    n_cache = session.cache.layer_len(0)
    for key, rows in single.rows.items():
        mixed = packed.rows[key]
        # same mass on the cache; the packed row also spans the other segments' columns, all zero
        assert torch.allclose(mixed[..., :n_cache], rows[..., :n_cache], atol=1e-5)
        assert torch.allclose(mixed.sum(-1), torch.ones_like(mixed.sum(-1)), atol=1e-5)
        assert torch.allclose(mixed[..., :n_cache].sum(-1) + 0, rows[..., :n_cache].sum(-1), atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-embedded", "tiny-qwen2-vl"])
def test_nnsight_trace_rows_match_eager(name):
    from probes.nnsight_trace import trace_attention_rows

    adapter = _tiny(name)
    ids = adapter.tokenizer("Attention, traced ad hoc.", return_tensors="pt").input_ids
    rows = trace_attention_rows(adapter.model, {"input_ids": ids}, rows=[-3, -2, -1])
    adapter.set_attention("eager")
    try:
        with torch.no_grad():
            eager = adapter.model(input_ids=ids, output_attentions=True).attentions
    finally:
        adapter.set_attention("hermes")
    assert sorted(rows) == list(range(adapter.num_layers))
    for layer, ours in rows.items():
        assert torch.allclose(ours, eager[layer][0, :, -3:, :].float(), atol=1e-5)


def test_observed_probe_forward_output_equals_the_fast_kernel(tiny, frames):
    """A probe forward computes its output from the observed probabilities; it must equal sdpa's."""
    session = StreamingSession(tiny, config=SessionConfig(chunk_frames=4))
    session.ingest(frames[:6])
    session.flush()
    chunk = tiny.encode_question(session.template.question_text("What now?"), session.next_position)
    outputs = {}
    for phase in ("ask", "probe"):
        grab = RowGrabber(phase)
        with attached(session, grab), session.cache.scratch(chunk.positions, chunk.meta):
            outputs[phase] = session._forward(chunk, phase, keep=False)
        assert len(grab.rows) == tiny.num_layers
    assert torch.allclose(outputs["ask"], outputs["probe"], atol=1e-5)
