"""``hermes-lab study`` over many videos: the aggregate (pure functions), the CLI, resume, errors, torchrun."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from analysis.derive import derive
from analysis.synthetic import hermes_like_recording
from hermes_lab.cli import main
from probes import capture as capture_module
from probes.aggregate import RunningStats, aggregate, aggregate_dirs, reference_frames, step_mask
from probes.capture import read_video_list
from probes.recording import Recording, RecordingError, layer_name

MODEL = "tiny-llava-ov"
V1, V2 = "synthetic:seed=1,frames=10,size=64x64", "synthetic:seed=2,frames=16,size=64x64"
ARGS = ["--model", MODEL, "--chunk-frames", "4", "--no-figures"]


# --------------------------------------------------------------------------- planted recordings
def planted(frames: list[int], entropy: list[float], heads: int = 2, video: str = "v") -> Recording:
    """One layer, one query kind; entropy[t] at every head, frame mass uniform over the streamed frames."""
    t, f = len(frames), max(frames)
    fm = torch.full((t, 1, heads, f), math.nan)
    for i, n in enumerate(frames):
        fm[i, :, :, :n] = 1.0 / n
    ent = torch.tensor(entropy, dtype=torch.float32).reshape(t, 1, 1).expand(t, 1, heads).clone()
    tensors = {"steps.frames": torch.tensor(frames), "steps.time": torch.tensor(frames, dtype=torch.float32) / 2,
               layer_name(0, "frame_mass"): fm, layer_name(0, "entropy"): ent}
    meta = {"num_layers": 1, "num_heads": heads, "queries": ["local"], "tokens_per_frame": 4, "model": "m",
            "chunk_frames": 4, "query_kind": "pseudo", "video": video, "steps": t, "frames": f, "seconds": 1.0}
    return Recording(tensors, meta)


def agg(*recs: Recording) -> Recording:
    return aggregate(recs, [r["steps.frames"] for r in recs])


def test_mean_and_std_of_planted_values() -> None:
    values = [[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]]
    out = agg(*(planted([4, 8], v, video=f"v{i}") for i, v in enumerate(values)))
    expected = torch.tensor(values)
    assert torch.allclose(out["entropy", 0][:, 0, 0], expected.mean(0))
    assert torch.allclose(out["entropy_std", 0][:, 0, 0], expected.std(0))  # sample std (ddof=1)
    assert out["steps.videos"].tolist() == [3, 3]
    assert out.is_aggregate and out.meta["aggregate"]["videos"] == 3
    assert [s["video"] for s in out.meta["aggregate"]["sources"]] == ["v0", "v1", "v2"]
    out.validate()


def test_nan_is_skipped_and_one_value_has_no_spread() -> None:
    a, b = planted([4, 8], [1.0, 2.0]), planted([4, 8], [3.0, 4.0])
    a.tensors[layer_name(0, "entropy")][1, 0, 1] = math.nan
    out = agg(a, b)
    assert out["entropy", 0][1, 0].tolist() == [3.0, 4.0]  # head 1 at step 1: only b's value
    assert out["entropy_std", 0][1, 0, 0] == pytest.approx(math.sqrt(2))
    assert math.isnan(out["entropy_std", 0][1, 0, 1])
    # frames not streamed yet stay NaN in the mean
    assert torch.isnan(out["frame_mass", 0][0, 0, 0, 4:]).all()


def test_videos_of_different_lengths_align_by_step() -> None:
    short, long = planted([4, 8, 10], [1.0, 2.0, 3.0]), planted([4, 8, 12, 16], [5.0, 6.0, 7.0, 8.0])
    assert reference_frames([short["steps.frames"], long["steps.frames"]]).tolist() == [4, 8, 12, 16]
    assert step_mask(short["steps.frames"], torch.tensor([4, 8, 12, 16])).tolist() == [True, True, False, False]
    out = agg(short, long)
    assert out["steps.frames"].tolist() == [4, 8, 12, 16]
    assert out["steps.videos"].tolist() == [2, 2, 1, 1]
    # the short video's partial last chunk (10 frames, where the long one had 12) is left out of step 2
    assert out["entropy", 0][:, 0, 0].tolist() == [3.0, 4.0, 7.0, 8.0]
    assert out["frame_mass", 0].shape == (4, 1, 2, 16)
    assert torch.allclose(out["frame_mass", 0].nansum(-1), torch.ones(4, 1, 2))  # each step still sums to one


def test_running_stats_grow_to_the_largest_input() -> None:
    stats = RunningStats()
    stats.add(torch.tensor([1.0, 2.0]))
    stats.add(torch.tensor([3.0, 4.0, 5.0]))
    mean, std = stats.result()
    assert mean.tolist() == [2.0, 3.0, 5.0]
    assert std[:2].tolist() == pytest.approx([math.sqrt(2)] * 2) and math.isnan(std[2])


def test_incompatible_recordings_are_refused() -> None:
    with pytest.raises(RecordingError, match="num_heads"):
        agg(planted([4], [1.0], heads=2), planted([4], [1.0], heads=3))
    with pytest.raises(RecordingError, match="already an aggregate"):
        agg(agg(planted([4], [1.0]), planted([4], [2.0])), planted([4], [1.0]))


def test_derive_reads_an_aggregate_of_planted_recordings(tmp_path) -> None:
    """Two noisy HERMES-like videos of different lengths: the aggregate recovers the planted tiers."""
    paths = []
    for i, frames in enumerate((20, 27)):
        paths.append(hermes_like_recording(8, frames=frames, noise=0.3, seed=i).save(tmp_path / f"{i:03d}"))
    out = aggregate_dirs(paths, root=tmp_path)
    out.save(tmp_path / "agg")
    spec = derive(Recording.load(tmp_path / "agg"), "measured")
    assert spec.source["tiers"] == {"sensory": [0, 1], "working": [2, 4], "long-term": [5, 7]}
    assert [s["path"] for s in out.meta["aggregate"]["sources"]] == ["000", "001"]


def test_video_list_file(tmp_path) -> None:
    listing = tmp_path / "list" / "videos.txt"
    listing.parent.mkdir()
    listing.write_text(f"# two videos\n\n{V1}\n  clip.mp4  \n/abs/clip.mp4\n")
    assert read_video_list(listing) == [V1, str(listing.parent / "clip.mp4"), "/abs/clip.mp4"]


# --------------------------------------------------------------------------- the command
def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["study", *ARGS, *args])
    out, err = capsys.readouterr()
    return code, out, err


def tensors_close(a: Recording, b: Recording, atol: float = 0.0) -> bool:
    assert set(a.tensors) == set(b.tensors)
    return all(torch.allclose(a.tensors[n].double(), b.tensors[n].double(), atol=atol, rtol=0, equal_nan=True)
               for n in a.tensors)


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "two"
    assert main(["study", *ARGS, "--video", V1, "--video", V2, "--out", str(out)]) == 0
    return out


def test_two_videos_give_two_recordings_and_their_mean(two_videos) -> None:
    assert sorted(p.name for p in (two_videos / "videos").iterdir()) == ["000", "001"]
    a, b = (Recording.load(two_videos / "videos" / n) for n in ("000", "001"))
    assert a.meta["study"]["video"] == V1 and b.meta["study"]["video"] == V2
    out = Recording.load(two_videos)
    assert out.meta["aggregate"]["videos"] == 2 and out.meta["study"]["videos"] == [V1, V2]
    assert out["steps.frames"].tolist() == [4, 8, 12, 16] and out["steps.videos"].tolist() == [2, 2, 1, 1]
    for name, mean in out.tensors.items():
        if name.startswith("steps.") or name.endswith("_std"):
            continue
        x = torch.full_like(b.tensors[name], math.nan)  # video 0 NaN-padded to video 1's shape
        x[tuple(slice(0, n) for n in a.tensors[name].shape)] = a.tensors[name]
        y = b.tensors[name]
        # steps 0-1: both videos (same frames streamed); steps 2-3: video 1 alone (video 0 ended mid-chunk)
        assert torch.allclose(mean[:2], torch.stack([x[:2], y[:2]]).nanmean(0), atol=1e-6, equal_nan=True), name
        assert torch.allclose(mean[2:], y[2:], equal_nan=True), name
        assert torch.allclose(out.tensors[name + "_std"][:2], torch.stack([x[:2], y[:2]]).std(0), atol=1e-6,
                              equal_nan=True), name


def test_derive_on_the_aggregate(two_videos, tmp_path, capsys) -> None:
    spec_path = tmp_path / "p.json"
    assert main(["derive", "--study", str(two_videos), "--out", str(spec_path), "--budget", "16"]) == 0
    spec = json.loads(spec_path.read_text())
    assert len(spec["layers"]) == Recording.load(two_videos).num_layers == 4
    assert spec["source"]["video"] == "aggregate of 2 videos"


def test_rerun_resumes_and_other_folders_are_refused(two_videos, capsys, monkeypatch) -> None:
    before = (two_videos / "videos" / "000" / "recording.json").stat().st_mtime_ns
    monkeypatch.setattr(capture_module, "capture", lambda *a, **k: pytest.fail("nothing should be recorded"))
    code, out, _ = run(capsys, "--video", V1, "--video", V2, "--out", str(two_videos))
    assert code == 0 and "0 of 2 videos (2 already there)" in out
    assert (two_videos / "videos" / "000" / "recording.json").stat().st_mtime_ns == before
    for other in (["--video", V2, "--video", V1], ["--video", V1], ["--video", V1, "--video", V2, "--fps", "1"]):
        code, out, err = run(capsys, *other, "--out", str(two_videos))
        assert code == 2 and out == "" and "not empty and is not a study" in err and err.count("\n") == 1


def test_single_video_keeps_its_layout(tmp_path, capsys) -> None:
    out = tmp_path / "one"
    code, stdout, _ = run(capsys, "--video", V1, "--out", str(out))
    assert code == 0 and stdout.startswith("recorded 3 steps x 4 layers x 4 heads (local, global, mixed) over 10")
    # the recording, and beside it what was read off it (see test_study_report)
    assert sorted(p.name for p in out.iterdir()) == ["recording.json", "recording.safetensors", "summary.json"]
    assert not Recording.load(out).is_aggregate
    code, stdout, err = run(capsys, "--video", V1, "--out", str(out))  # the same study again: kept
    assert code == 0 and "already holds" in err


def test_a_failing_video_is_recorded_named_and_retried(tmp_path, capsys, monkeypatch) -> None:
    real = capture_module.capture

    def flaky(adapter, source, *args, **kwargs):
        if "seed=2" in source.name:
            raise RuntimeError("decoder exploded")
        return real(adapter, source, *args, **kwargs)

    out = tmp_path / "flaky"
    monkeypatch.setattr(capture_module, "capture", flaky)
    code, stdout, err = run(capsys, "--video", V1, "--video", V2, "--out", str(out))
    assert code == 2 and stdout == ""
    assert "1 video(s) failed: 001 " in err and "decoder exploded" in err
    assert json.loads((out / "failures.rank0.json").read_text())["failures"][0]["video_index"] == 1
    assert not (out / "recording.json").exists() and (out / "videos" / "000" / "recording.json").exists()
    monkeypatch.setattr(capture_module, "capture", real)
    code, stdout, _ = run(capsys, "--video", V1, "--video", V2, "--out", str(out))
    assert code == 0 and "1 of 2 videos (1 already there)" in stdout
    assert not (out / "failures.rank0.json").exists() and Recording.load(out).is_aggregate


@pytest.mark.parametrize("case", ["empty list", "missing list", "missing video", "both", "out is a file"])
def test_errors_are_one_line_before_any_model_loads(case, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("probes.cli.load_model", lambda *a, **k: pytest.fail("the model must not load"))
    listing = tmp_path / "videos.txt"
    listing.write_text("# nothing yet\n\n")
    out = tmp_path / "out"
    args = {"empty list": ["--videos", str(listing)],
            "missing list": ["--videos", str(tmp_path / "nope.txt")],
            "missing video": ["--video", V1, "--video", str(tmp_path / "gone.mp4")],
            "both": ["--video", V1, "--videos", str(listing)],
            "out is a file": ["--video", V1, "--video", V2]}[case]
    if case == "out is a file":
        out.write_text("x")
    code, stdout, err = run(capsys, *args, "--out", str(out))
    assert code == 2 and stdout == "" and err.startswith("hermes-lab: error: ") and err.count("\n") == 1
    expected = {"empty list": "lists no videos", "missing list": "does not exist", "missing video": "gone.mp4",
                "both": "not both", "out is a file": "is a file"}[case]
    assert expected in err


@pytest.mark.slow
def test_torchrun_two_ranks_give_the_aggregate_of_one_process(two_videos, tmp_path) -> None:
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hermes_lab", "study", *ARGS, "--video", V1, "--video", V2, "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rank 0 alone prints: the recorded line, the per-layer table of the aggregate and where it wrote it
    assert proc.stdout.startswith("recorded 2 of 2 videos") and proc.stdout.count("recorded") == 1
    assert proc.stdout.count("summary.json") == 1
    assert tensors_close(Recording.load(out), Recording.load(two_videos), atol=1e-5)
    assert not list(out.glob("failures.rank*.json"))
