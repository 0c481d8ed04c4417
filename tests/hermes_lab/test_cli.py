"""The ``hermes-lab`` command: JSON output, timed questions, one-line errors."""

from __future__ import annotations

import json

import pytest

from hermes_lab.cli import main
from hermes_policy.cli import TimedQuestion
from hermes_policy.errors import SessionError
from hermes_policy.video import SyntheticVideo, write_mp4


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_stream_granularity_head_reports_each_heads_rows(capsys):
    code, out, _ = run(capsys, "stream", "--model", "tiny-qwen2-vl", "--video", "synthetic:seed=1,frames=16",
                       "--policy", "hermes", "--budget", "24", "--granularity", "head", "--max-new-tokens", "2",
                       "--json")
    assert code == 0
    result = json.loads(out)
    assert result["granularity"] == "head"
    heads = result["head_tokens"]  # per layer, per KV head
    assert len(heads) == 4 and all(len(row) == 2 for row in heads)
    assert result["kv_bytes"] == sum(map(sum, heads)) * 16 * 2 * 4  # head_dim 16, keys and values, float32
    code, _, err = run(capsys, "stream", "--model", "tiny-qwen2-vl", "--video", "synthetic:seed=1,frames=16",
                       "--policy", "sink-window", "--budget", "24", "--granularity", "head")
    assert code == 2 and err.count("\n") == 1 and "works with full, hermes" in err


def test_stream_json_answers_each_timed_question(capsys):
    code, out, _ = run(
        capsys, "stream", "--model", "tiny-qwen2-vl", "--video", "synthetic:seed=1,frames=16",
        "--policy", "sink-window", "--budget", "24", "--ask", "2:What?", "--ask", "5.5:And now?",
        "--max-new-tokens", "3", "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert set(result) == {"model", "family", "policy", "budget", "granularity", "frames", "kv_bytes",
                           "kv_bytes_by_device", "recurrent_bytes", "weights", "answers"}
    assert result["granularity"] == "layer" and "head_tokens" not in result
    assert result["family"] == "qwen2-vl"
    assert (result["model"], result["policy"], result["budget"], result["frames"]) == (
        "tiny-qwen2-vl", "sink-window", 24, 16)
    assert [a["question"] for a in result["answers"]] == ["What?", "And now?"]
    # a question at T is asked once the stream reaches T: the last frame before it is at most T
    assert [a["time"] for a in result["answers"]] == [2.0, 5.5]
    for a in result["answers"]:
        assert set(a) == {"time", "question", "answer", "ttft_ms", "kv_bytes"} and a["ttft_ms"] > 0


def test_stream_reads_a_video_file(capsys, tmp_path):
    path = write_mp4(SyntheticVideo(seed=2, frames=6, width=64, height=64), tmp_path / "clip.mp4")
    code, out, _ = run(capsys, "stream", "--model", "tiny-embedded", "--video", str(path), "--json",
                       "--max-new-tokens", "2")
    assert code == 0 and json.loads(out)["frames"] == 6


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "nope"], "unknown model 'nope'"),
        (["--policy", "lru"], "unknown policy 'lru'"),
        (["--policy", "sink-window", "--budget", "1"], "cannot hold one frame"),
        (["--ask", "soon:What?"], "--ask takes 'SECONDS:question'"),
        (["--ask", "3:   "], "--ask takes 'SECONDS:question'"),
        (["--video", "synthetic:seed=1"], "frames"),
        (["--reindex", "sometimes"], "reindex must be"),
        (["--chunk-frames", "0"], "chunk_frames"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, args, message):
    code, out, err = run(capsys, "stream", "--model", "tiny-embedded", "--video", "synthetic:seed=1,frames=4", *args)
    assert code == 2
    assert out == ""
    lines = [line for line in err.splitlines() if line.startswith("hermes-lab: error:")]
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_corrupt_video_file_is_reported_and_left_alone(capsys, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01not a video" * 100)
    before = bad.read_bytes()
    code, _, err = run(capsys, "stream", "--model", "tiny-embedded", "--video", str(bad))
    assert code == 2 and "broken.mp4" in err
    assert bad.read_bytes() == before


def test_timed_question_parsing():
    assert TimedQuestion.parse("30:What is happening?") == TimedQuestion(30.0, "What is happening?")
    assert TimedQuestion.parse("1.5: a: b") == TimedQuestion(1.5, "a: b")
    for bad in ["", "What?", "-1:What?", "x:What?", "3:"]:
        with pytest.raises(SessionError):
            TimedQuestion.parse(bad)


def test_version_and_help(capsys):
    assert run(capsys, "--version")[0] == 0
    code, out, _ = run(capsys, "stream", "--help")
    assert code == 0 and "--budget" in out


@pytest.mark.slow
def test_done_means_command_on_the_embedded_model(capsys):
    code, out, _ = run(
        capsys, "stream", "--model", "embedded", "--video", "synthetic:seed=1,frames=64", "--policy", "sink-window",
        "--budget", "512", "--ask", "30:What is happening?", "--max-new-tokens", "8", "--json",
    )
    assert code == 0
    result = json.loads(out)
    assert result["frames"] == 64 and len(result["answers"]) == 1
    answer = result["answers"][0]
    assert answer["answer"].strip() and answer["time"] <= 30
    # layers x KV heads x head dim x 2 (K, V) x 4 bytes (float32, the embedded default) per cached row
    from hermes_policy.models.embedded import EMBEDDED_DIR

    config = json.loads((EMBEDDED_DIR / "config.json").read_text())
    per_row = config["num_hidden_layers"] * config["num_key_value_heads"] * config["head_dim"] * 2 * 4
    assert result["kv_bytes"] % per_row == 0
    assert result["kv_bytes"] // per_row - 512 < 64, "only the budget plus the system prefix is held"


def test_bench_prints_one_row_per_policy_and_length(capsys):
    code, out, _ = run(capsys, "bench", "--model", "tiny-embedded", "--video", "synthetic:seed=1,frames=4",
                       "--frames", "6,12", "--policies", "full,sink-window,hermes", "--budget", "8", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["policy"], r["frames"]) for r in rows] == [
        (p, n) for n in (6, 12) for p in ("full", "sink-window", "hermes")
    ]
    for r in rows:
        assert set(r) == {"policy", "frames", "budget", "ttft_ms", "ingest_ms_per_frame", "kv_bytes", "peak_rss_bytes",
                          "kv_bytes_by_device", "tokens_per_frame", "weights", "ingest_full_ms_per_frame",
                          "vision_ms_per_frame", "lm_ms_per_frame", "policy_ms_per_frame", "frame_size",
                          "peak_gpu_bytes"}
        assert r["weights"] == "random" and r["tokens_per_frame"] > 0 and r["frame_size"] == "128x128"
        # the stages are part of the ingest loop's wall time, never more than it
        stages = r["vision_ms_per_frame"] + r["lm_ms_per_frame"] + r["policy_ms_per_frame"]
        assert 0 < stages <= r["ingest_ms_per_frame"] * 1.05
        # full never exceeds a budget; 6 frames do not fill 8 tokens' worth at 1+ tokens/frame only for full
        assert (r["ingest_full_ms_per_frame"] is None) == (
            r["policy"] == "full" or r["tokens_per_frame"] * r["frames"] <= 8)
        assert sum(r["kv_bytes_by_device"].values()) == r["kv_bytes"]
        assert r["ttft_ms"] > 0 and r["kv_bytes"] > 0 and r["peak_rss_bytes"] > 2**20
    by = {(r["policy"], r["frames"]): r for r in rows}
    assert by[("full", 12)]["kv_bytes"] > by[("full", 6)]["kv_bytes"]
    assert by[("sink-window", 12)]["kv_bytes"] == by[("sink-window", 6)]["kv_bytes"]


def test_frame_size_goes_through_the_models_processor(capsys, tmp_path):
    """--frame-size scales the frames before the processor: more pixels, more tokens per frame."""
    def bench(*extra: str) -> dict:
        code, out, err = run(capsys, "bench", "--model", "tiny-qwen2-vl", "--video", "synthetic:seed=1,frames=4",
                             "--frames", "4", "--policies", "full", "--ttft-repeats", "1", "--json", *extra)
        assert code == 0, err
        return json.loads(out)[0]

    # the tiny Qwen2-VL processor caps frames at 56x56 pixels (4 merged tokens); 28x28 gives 1
    small, large = bench("--frame-size", "28x28"), bench("--frame-size", "56x56")
    assert (small["frame_size"], large["frame_size"]) == ("28x28", "56x56")
    assert (small["tokens_per_frame"], large["tokens_per_frame"]) == (1, 4)
    clip = write_mp4(SyntheticVideo(seed=2, frames=4, width=64, height=64), tmp_path / "clip.mp4")
    code, out, _ = run(capsys, "bench", "--model", "tiny-qwen2-vl", "--video", str(clip), "--frames", "4",
                       "--policies", "full", "--frame-size", "28x28", "--ttft-repeats", "1", "--json")
    assert code == 0 and json.loads(out)[0]["tokens_per_frame"] == 1 and json.loads(out)[0]["frame_size"] == "28x28"
    study = tmp_path / "study"
    assert run(capsys, "study", "--model", "tiny-qwen2-vl", "--video", str(clip), "--frame-size", "28x28",
               "--out", str(study))[0] == 0
    meta = json.loads((study / "recording.json").read_text())
    assert meta["frame_size"] == [28, 28] and meta["study"]["frame_size"] == [28, 28]


@pytest.mark.parametrize("command", ["bench", "study"])
@pytest.mark.parametrize("size", ["0x64", "64", "64xbig", "9000x64"])
def test_bad_frame_size_is_one_line_before_the_model_loads(capsys, tmp_path, command, size):
    code, out, err = run(capsys, command, "--model", "tiny-embedded", "--video", "synthetic:seed=1,frames=4",
                         "--frame-size", size, *(["--out", str(tmp_path / "s")] if command == "study" else []))
    assert code == 2 and out == "" and err.count("\n") == 1 and "hermes-lab: error:" in err and "frame size" in err
    assert not (tmp_path / "s").exists()


def test_study_derive_figures_chain(capsys, tmp_path):
    study = tmp_path / "study"
    assert run(capsys, "study", "--model", "tiny-qwen2.5-vl", "--video", "synthetic:seed=5,frames=12,size=64x64",
               "--queries", "both", "--out", str(study))[0] == 0
    assert run(capsys, "derive", "--study", str(study), "--out", str(tmp_path / "p.json"), "--budget", "16")[0] == 0
    assert run(capsys, "figures", "--study", str(study), "--out", str(tmp_path / "fig"), "--format", "png")[0] == 0
    code, out, _ = run(capsys, "stream", "--model", "tiny-qwen2.5-vl",
                       "--video", "synthetic:seed=5,frames=12,size=64x64",
                       "--spec", str(tmp_path / "p.json"), "--json", "--max-new-tokens", "2")
    assert code == 0 and json.loads(out)["policy"] == "hermes"
    code, _, err = run(capsys, "derive", "--study", str(tmp_path / "nothing"), "--out", str(tmp_path / "q.json"))
    assert code == 2 and "hermes-lab: error:" in err


def test_bench_reports_the_frames_it_streamed_not_the_ones_asked_for(tmp_path, capsys):
    from hermes_policy.video import SyntheticVideo, write_mp4

    clip = write_mp4(SyntheticVideo(seed=1, frames=5, width=64, height=64), tmp_path / "short.mp4")
    code, out, err = run(capsys, "bench", "--model", "tiny-embedded", "--video", str(clip), "--frames", "9",
                         "--policies", "full", "--json")
    assert code == 0 and [r["frames"] for r in json.loads(out)] == [5]
    assert "has 5 frames" in err


def test_tiny_models_say_their_weights_are_random(capsys):
    code, out, _ = run(capsys, "stream", "--model", "tiny-embedded", "--video", "synthetic:seed=1,frames=4",
                       "--max-new-tokens", "1", "--json")
    assert code == 0 and json.loads(out)["weights"] == "random"


@pytest.mark.parametrize("model, family", [("tiny-qwen3-vl", "qwen3-vl"), ("tiny-qwen3.5", "qwen3.5"),
                                           ("tiny-internvl", "internvl"), ("tiny-smolvlm", "smolvlm")])
def test_stream_runs_and_answers_on_each_2025_26_family(capsys, model, family):
    for policy in (["--policy", "full"], ["--policy", "hermes", "--budget", "48"]):
        code, out, _ = run(capsys, "stream", "--model", model, "--video", "synthetic:seed=2,frames=12", *policy,
                           "--ask", "5:What is on screen?", "--max-new-tokens", "2", "--json")
        assert code == 0
        result = json.loads(out)
        assert result["family"] == family and result["frames"] == 12
        assert len(result["answers"]) == 1 and result["answers"][0]["ttft_ms"] > 0
        # only Qwen3.5's linear-attention layers hold a recurrent state
        assert (result["recurrent_bytes"] > 0) == (family == "qwen3.5")
