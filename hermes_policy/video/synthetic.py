"""Procedural test videos with exact ground truth.

A seeded simulation places coloured shapes on a plain background. Shapes appear,
jump to new positions, change colour and leave; now and then a scene cut clears
everything and changes the background. The simulation is recorded as an
:class:`~hermes_policy.video.events.EventLog`, and frames are rendered from it
lazily, so questions about the video have answers known in advance.

Design choices that keep questions unambiguous:

* At most one object of each shape and one of each colour is visible at a time,
  so "the circle" or "the red object" always names a single object.
* Objects do not overlap, so every visible object can actually be seen.
* Objects live at least ``min_lifetime`` frames and scenes at least
  ``min_scene`` frames, so nothing flickers in and out between two samples.
* Random draws happen frame by frame, so the first N frames of a longer video
  with the same seed are identical to a video of N frames.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from hermes_policy.errors import VideoError
from hermes_policy.video.events import Event, EventKind, EventLog, FrameState, ObjectState
from hermes_policy.video.frames import Frame, check_fps

RGB = tuple[int, int, int]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# Saturated, far apart in RGB, and each nameable with one common word.
COLOURS: dict[str, RGB] = {
    "red": (220, 30, 30),
    "green": (40, 180, 60),
    "blue": (40, 80, 230),
    "yellow": (245, 225, 30),
    "purple": (150, 50, 200),
    "orange": (250, 140, 20),
    "white": (255, 255, 255),
}

# Dark or muted, so every object colour stands out against every background.
BACKGROUNDS: dict[str, RGB] = {
    "black": (10, 10, 10),
    "grey": (100, 100, 100),
    "navy": (10, 15, 55),
    "dark green": (15, 60, 30),
    "brown": (90, 55, 25),
}

_MIN_SIDE, _MAX_SIDE = 16, 4096
_PLACEMENT_TRIES = 30  # rejection-sampling budget for a free spot
# Positions and sizes are rounded (well below a pixel at 4096 px) so logs stay readable.
_DECIMALS = 4


@dataclass(frozen=True)
class SceneParams:
    """Per-frame probabilities and limits of the scene simulation.

    Probabilities are per frame: ``appear_prob`` for the scene as a whole, the
    others per visible object (``leave``, ``move`` and ``recolour`` are mutually
    exclusive within a frame).
    """

    max_objects: int = 3
    appear_prob: float = 0.3
    leave_prob: float = 0.1
    move_prob: float = 0.12
    recolour_prob: float = 0.06
    cut_prob: float = 0.08
    min_lifetime: int = 3
    min_scene: int = 8
    size_range: tuple[float, float] = (0.09, 0.16)

    def __post_init__(self) -> None:
        if not 1 <= self.max_objects <= len(SHAPES):
            # Visible shapes are unique, so there can never be more objects than shapes.
            raise VideoError(
                f"max_objects must be between 1 and {len(SHAPES)}, got {self.max_objects}"
            )
        probs = (
            self.appear_prob,
            self.leave_prob,
            self.move_prob,
            self.recolour_prob,
            self.cut_prob,
        )
        if not all(0.0 <= p <= 1.0 for p in probs):
            raise VideoError(f"scene probabilities must lie in [0, 1], got {probs}")
        if self.leave_prob + self.move_prob + self.recolour_prob > 1.0:
            raise VideoError("leave_prob + move_prob + recolour_prob must not exceed 1")
        if self.min_lifetime < 1 or self.min_scene < 1:
            raise VideoError("min_lifetime and min_scene must be >= 1 frame")
        low, high = self.size_range
        if not 0.0 < low <= high <= 0.25:
            raise VideoError(
                f"size_range must satisfy 0 < low <= high <= 0.25, got {self.size_range}"
            )


@dataclass
class _Live:
    """Mutable simulation state of one visible object."""

    object_id: int
    shape: str
    colour: str
    x: float
    y: float
    size: float
    born: int

    def snapshot(self) -> ObjectState:
        return ObjectState(self.object_id, self.shape, self.colour, self.x, self.y, self.size)


class _Simulator:
    """Steps the scene one frame at a time, recording events and states."""

    def __init__(self, seed: int, fps: float, width: int, height: int, params: SceneParams) -> None:
        self.rng = np.random.default_rng(seed)
        self.fps = fps
        self.width, self.height = width, height
        self.params = params
        self.live: list[_Live] = []
        self.next_id = 0
        self.background = ""
        self.last_cut = 0
        self.events: list[Event] = []
        self.states: list[FrameState] = []

    def step(self, frame: int) -> None:
        if frame == 0:
            self.background = self._choice(list(BACKGROUNDS))
        elif self._cut_due(frame):
            self._cut(frame)
        else:
            # Iterate over a copy: _update may remove the object from self.live.
            for obj in list(self.live):
                self._update(obj, frame)
        # Frame 0 always shows something, so no video starts on an empty screen.
        if len(self.live) < self.params.max_objects and (
            frame == 0 or self.rng.random() < self.params.appear_prob
        ):
            self._appear(frame)
        self.states.append(
            FrameState(
                frame=frame,
                time=frame / self.fps,
                background=self.background,
                objects=tuple(obj.snapshot() for obj in self.live),
            )
        )

    # --- scene-level changes ---

    def _cut_due(self, frame: int) -> bool:
        settled = all(frame - obj.born >= self.params.min_lifetime for obj in self.live)
        long_enough = frame - self.last_cut >= self.params.min_scene
        return settled and long_enough and self.rng.random() < self.params.cut_prob

    def _cut(self, frame: int) -> None:
        self.background = self._choice([b for b in BACKGROUNDS if b != self.background])
        self.last_cut = frame
        self._record(frame, "cut", None, detail=self.background)
        # Every appear gets a matching leave, even when a cut is the reason.
        for obj in self.live:
            self._record(frame, "leave", obj, detail="scene cut")
        self.live.clear()

    def _appear(self, frame: int) -> None:
        shape = self._choice([s for s in SHAPES if s not in {o.shape for o in self.live}])
        colour = self._choice([c for c in COLOURS if c not in {o.colour for o in self.live}])
        size = round(float(self.rng.uniform(*self.params.size_range)), _DECIMALS)
        spot = self._free_spot(size, others=self.live)
        if spot is None:  # too crowded this frame; try again on a later one
            return
        obj = _Live(self.next_id, shape, colour, spot[0], spot[1], size, born=frame)
        self.next_id += 1
        self.live.append(obj)
        self._record(frame, "appear", obj)

    # --- per-object changes ---

    def _update(self, obj: _Live, frame: int) -> None:
        p = self.params
        roll = self.rng.random()
        if roll < p.leave_prob:
            if frame - obj.born >= p.min_lifetime:
                self.live.remove(obj)
                self._record(frame, "leave", obj)
        elif roll < p.leave_prob + p.move_prob:
            self._move(obj, frame)
        elif roll < p.leave_prob + p.move_prob + p.recolour_prob:
            self._recolour(obj, frame)

    def _move(self, obj: _Live, frame: int) -> None:
        others = [o for o in self.live if o is not obj]
        # A move must be a visible jump, not a one-pixel nudge.
        spot = self._free_spot(obj.size, others, away_from=(obj.x, obj.y))
        if spot is None:
            return
        old = (obj.x, obj.y)
        obj.x, obj.y = spot
        self._record(frame, "move", obj, detail=f"from ({old[0]:.3f}, {old[1]:.3f})")

    def _recolour(self, obj: _Live, frame: int) -> None:
        used = {o.colour for o in self.live}
        old = obj.colour
        obj.colour = self._choice([c for c in COLOURS if c not in used])
        self._record(frame, "recolour", obj, detail=f"from {old}")

    # --- helpers ---

    def _choice(self, options: list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def _free_spot(
        self,
        size: float,
        others: list[_Live],
        away_from: tuple[float, float] | None = None,
    ) -> tuple[float, float] | None:
        """A centre ``(x, y)`` in frame fractions where a radius-``size`` object fits, or None.

        Distances are measured in pixels, so the rules hold for non-square frames.
        """
        side = min(self.width, self.height)
        radius = size * side
        # Keep the whole shape inside the frame.
        x_margin, y_margin = radius / self.width, radius / self.height
        for _ in range(_PLACEMENT_TRIES):
            x = round(float(self.rng.uniform(x_margin, 1.0 - x_margin)), _DECIMALS)
            y = round(float(self.rng.uniform(y_margin, 1.0 - y_margin)), _DECIMALS)
            if away_from is not None and self._pixel_distance((x, y), away_from) < 3 * radius:
                continue
            gap = 0.02 * side  # a little clear space between shapes
            if all(
                self._pixel_distance((x, y), (o.x, o.y)) > radius + o.size * side + gap
                for o in others
            ):
                return x, y
        return None

    def _pixel_distance(self, a: tuple[float, float], b: tuple[float, float]) -> float:
        return math.hypot((a[0] - b[0]) * self.width, (a[1] - b[1]) * self.height)

    def _record(self, frame: int, kind: EventKind, obj: _Live | None, detail: str = "") -> None:
        self.events.append(
            Event(
                frame=frame,
                time=frame / self.fps,
                kind=kind,
                object_id=None if obj is None else obj.object_id,
                shape=None if obj is None else obj.shape,
                colour=None if obj is None else obj.colour,
                position=None if obj is None else (obj.x, obj.y),
                detail=detail,
            )
        )


def simulate(
    seed: int,
    num_frames: int,
    fps: float = 2.0,
    width: int = 128,
    height: int = 128,
    params: SceneParams | None = None,
) -> EventLog:
    """Run the scene simulation for ``num_frames`` frames and return its ground truth.

    Cheap (no rendering): use it to generate questions without producing pixels.
    ``width``/``height`` matter only through the aspect ratio used for placement.
    """
    sim = _Simulator(seed, fps, width, height, params or SceneParams())
    for frame in range(num_frames):
        sim.step(frame)
    return EventLog(
        seed=seed,
        fps=fps,
        width=width,
        height=height,
        events=tuple(sim.events),
        states=tuple(sim.states),
    )


def render_state(state: FrameState, width: int, height: int) -> np.ndarray:
    """Draw one frame's scene; returns a ``(height, width, 3)`` uint8 RGB array."""
    image = Image.new("RGB", (width, height), BACKGROUNDS[state.background])
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    for obj in state.objects:
        cx, cy, r = obj.x * width, obj.y * height, obj.size * side
        fill = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif obj.shape == "square":
            # Half-side 0.85 r: close to the circle's area, so size does not give shape away.
            h = 0.85 * r
            draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
        elif obj.shape == "triangle":
            # Equilateral, pointing up, inscribed in the radius-r circle.
            dx, dy = r * math.sqrt(3) / 2, r / 2
            draw.polygon([(cx, cy - r), (cx - dx, cy + dy), (cx + dx, cy + dy)], fill=fill)
        else:
            raise ValueError(f"unknown shape {obj.shape!r}")
    return np.array(image)  # np.array, not asarray: callers get a writable copy


def _format_number(value: float) -> str:
    """Shortest spelling of ``value`` that parses back to the same float (2.0 -> '2')."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


class SyntheticVideo:
    """A procedurally generated video (see module docstring) as a VideoSource.

    The simulation runs at construction; frames are rendered on iteration. Frame
    ``i`` is shown at ``i / fps`` seconds; changing ``fps`` only rescales time,
    the sequence of scenes is the same.

    Args:
        seed: any integer >= 0; the same seed always gives the same video.
        frames: number of frames (>= 1).
        fps: sampling rate the frame times are expressed at.
        width, height: frame size in pixels (16..4096; even sizes are needed
            to encode to mp4).
        params: simulation probabilities and limits.
    """

    def __init__(
        self,
        seed: int,
        frames: int,
        fps: float = 2.0,
        width: int = 128,
        height: int = 128,
        params: SceneParams | None = None,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise VideoError(f"synthetic video: seed must be an integer >= 0, got {seed!r}")
        if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
            raise VideoError(f"synthetic video: frames must be an integer >= 1, got {frames!r}")
        for label, value in (("width", width), ("height", height)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not _MIN_SIDE <= value <= _MAX_SIDE
            ):
                raise VideoError(
                    f"synthetic video: {label} must be an integer in "
                    f"[{_MIN_SIDE}, {_MAX_SIDE}], got {value!r}"
                )
        self.fps = check_fps(fps, "synthetic video")
        self.seed = seed
        self.width, self.height = width, height
        self.num_frames: int | None = frames
        # A spec that open_video() turns back into this exact video.
        self.name = (
            f"synthetic:seed={seed},frames={frames},"
            f"fps={_format_number(self.fps)},size={width}x{height}"
        )
        self._log = simulate(seed, frames, self.fps, width, height, params)
        self.events: EventLog | None = self._log

    def frames(self) -> Iterator[Frame]:
        for state in self._log.states:
            yield Frame(
                index=state.frame,
                time=state.time,
                image=render_state(state, self.width, self.height),
            )

    def __repr__(self) -> str:
        return f"SyntheticVideo({self.name!r})"
