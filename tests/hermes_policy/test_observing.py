"""session.observing: observers attach through one handle, and filtered ones are never called."""

from __future__ import annotations

import pytest

from hermes_policy.attention import AttentionEvent
from hermes_policy.models.tiny import build_tiny
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import SyntheticVideo


class _Log:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def observe(self, event: AttentionEvent) -> None:
        self.calls.append((event.layer, event.phase))


@pytest.fixture(scope="module")
def adapter():
    return build_tiny("tiny-llava-ov")


def _stream(adapter) -> StreamingSession:
    session = StreamingSession(adapter, config=SessionConfig(chunk_frames=2))
    return session


def _run(session: StreamingSession) -> None:
    session.ingest(SyntheticVideo(seed=1, frames=4, width=64, height=64).frames())
    session.pseudo_queries({"global": "What happened?"})
    session.ask("What colour is it?", max_new_tokens=2)


def test_unfiltered_observer_sees_every_layer_and_phase(adapter) -> None:
    session, log = _stream(adapter), _Log()
    with session.observing(log) as handle:
        assert handle.attached and session.observers == (log,)
        _run(session)
    assert not handle.attached and session.observers == ()
    layers = {layer for layer, _ in log.calls}
    phases = {phase for _, phase in log.calls}
    assert layers == set(range(adapter.num_layers))
    assert {"prefix", "ingest", "probe", "ask", "decode"} <= phases


def test_filtered_observer_is_never_called_outside_its_filter(adapter) -> None:
    session, everything, filtered = _stream(adapter), _Log(), _Log()
    with session.observing(everything), session.observing(filtered, layers=[1], phases=["probe", "ask"]):
        _run(session)
    assert filtered.calls, "the filter let nothing through"
    assert set(filtered.calls) == {(1, "probe"), (1, "ask")}
    # exactly the matching subset of what an unfiltered observer saw, in the same order
    assert filtered.calls == [c for c in everything.calls if c in {(1, "probe"), (1, "ask")}]


def test_detach_without_a_with_block_and_twice(adapter) -> None:
    session, log = _stream(adapter), _Log()
    handle = session.observing(log, phases=["ingest"])
    session.ingest(SyntheticVideo(seed=1, frames=2, width=64, height=64).frames())
    handle.detach()
    handle.detach()
    n = len(log.calls)
    session.ingest(SyntheticVideo(seed=2, frames=2, width=64, height=64).frames())
    assert n == adapter.num_layers and len(log.calls) == n


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((_Log(),), {"phases": ["listen"]}, ValueError),
        ((_Log(),), {"layers": [99]}, ValueError),
        ((_Log(),), {"layers": [-1]}, ValueError),
        ((object(),), {}, TypeError),
    ],
)
def test_bad_filters_fail_before_anything_is_attached(adapter, args, kwargs, error) -> None:
    session = _stream(adapter)
    with pytest.raises(error):
        session.observing(*args, **kwargs)
    assert session.observers == ()


def test_observers_is_read_only(adapter) -> None:
    session = _stream(adapter)
    with pytest.raises(AttributeError):
        session.observers.append(_Log())  # a tuple: attach through observing()
