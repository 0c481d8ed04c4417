"""Ground truth for synthetic videos: what happened, when, and what was on screen.

A synthetic video is rendered from a simulation, so every fact about it is known
exactly. The :class:`EventLog` keeps those facts so that questions with known
answers ("what colour is the circle now?", "what appeared first?", "how many
objects appeared?") can be generated and scored without a vision model.

Positions and sizes are fractions of the frame (``x`` across the width, ``y``
down the height, ``size`` a radius relative to the shorter side), so the log does
not depend on the resolution the frames were rendered at.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from hermes_policy.errors import VideoError
from hermes_policy.jsonfile import loads_json

EventKind = Literal["appear", "move", "recolour", "leave", "cut"]
EVENT_KINDS: tuple[EventKind, ...] = ("appear", "move", "recolour", "leave", "cut")

# Bumped whenever the JSON layout changes, so stale logs fail loudly on load.
LOG_VERSION = 1


@dataclass(frozen=True)
class ObjectState:
    """One visible object in one frame.

    Attributes:
        object_id: unique within a video; never reused after the object leaves.
        shape: a name from ``synthetic.SHAPES``.
        colour: a name from ``synthetic.COLOURS``.
        x, y: centre as fractions of frame width / height (0, 0 is the top-left).
        size: radius as a fraction of the shorter frame side.
    """

    object_id: int
    shape: str
    colour: str
    x: float
    y: float
    size: float


@dataclass(frozen=True)
class FrameState:
    """Everything visible in one frame, ordered by ``object_id`` (drawing order)."""

    frame: int
    time: float
    background: str
    objects: tuple[ObjectState, ...]

    def find(self, *, shape: str | None = None, colour: str | None = None) -> ObjectState | None:
        """The visible object with this shape and/or colour, or None.

        Unambiguous because the simulator never shows two objects that share a
        shape or a colour at the same time.
        """
        for obj in self.objects:
            if (shape is None or obj.shape == shape) and (colour is None or obj.colour == colour):
                return obj
        return None


@dataclass(frozen=True)
class Event:
    """One change in the scene.

    Attributes:
        frame, time: when the change first becomes visible.
        kind: appear / move / recolour / leave / cut.
        object_id, shape: the object concerned; None for a cut.
        colour: the object's colour *after* the event; None for a cut.
        position: the object's ``(x, y)`` *after* the event; None for a cut.
        detail: human-readable extras: the previous colour or position, the new
            background of a cut, or "scene cut" for objects a cut removed.
    """

    frame: int
    time: float
    kind: EventKind
    object_id: int | None
    shape: str | None
    colour: str | None
    position: tuple[float, float] | None
    detail: str = ""


@dataclass(frozen=True)
class EventLog:
    """All events of a synthetic video plus the scene state of every frame.

    ``states[i]`` describes frame ``i``; ``events`` are in time order, and within
    a frame a cut comes before the leaves it causes, which come before appears.
    """

    seed: int
    fps: float
    width: int
    height: int
    events: tuple[Event, ...]
    states: tuple[FrameState, ...]

    @property
    def num_frames(self) -> int:
        return len(self.states)

    def state_at(self, frame: int) -> FrameState:
        """Scene state of ``frame`` (0-based)."""
        return self.states[frame]

    def events_at(self, frame: int) -> list[Event]:
        """Events that happen in exactly ``frame``."""
        return [e for e in self.events if e.frame == frame]

    def events_until(self, frame: int) -> list[Event]:
        """Events visible by ``frame`` (inclusive): what a streaming viewer has seen."""
        return [e for e in self.events if e.frame <= frame]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists)."""
        return {"version": LOG_VERSION, **asdict(self)}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EventLog:
        """Inverse of :meth:`to_dict`; raises VideoError on anything malformed."""
        try:
            if data["version"] != LOG_VERSION:
                raise VideoError(
                    f"event log version {data['version']!r} is not supported "
                    f"(expected {LOG_VERSION})"
                )
            events = tuple(_event_from_dict(e) for e in data["events"])
            states = tuple(
                FrameState(
                    frame=s["frame"],
                    time=s["time"],
                    background=s["background"],
                    objects=tuple(ObjectState(**o) for o in s["objects"]),
                )
                for s in data["states"]
            )
            return cls(
                seed=data["seed"],
                fps=data["fps"],
                width=data["width"],
                height=data["height"],
                events=events,
                states=states,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VideoError(f"not a valid synthetic event log: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str) -> EventLog:
        return cls.from_dict(loads_json(text, VideoError, "event log"))


def _event_from_dict(data: dict[str, Any]) -> Event:
    if data["kind"] not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {data['kind']!r}")
    position = data["position"]
    # JSON has no tuples; restore them so round-tripped logs compare equal.
    return Event(**{**data, "position": None if position is None else tuple(position)})
