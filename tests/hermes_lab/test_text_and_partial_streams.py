"""--ask text and times, and a stream that breaks partway: answers already given are kept, then the error."""

from __future__ import annotations

import json
import re

import pytest

from hermes_lab.cli import main
from hermes_policy.video import SyntheticVideo, write_mp4


@pytest.fixture(scope="module")
def half_written(tmp_path_factory):
    """60 frames at 2 fps cut at half its bytes: it opens, and breaks mid-stream."""
    folder = tmp_path_factory.mktemp("half")
    data = write_mp4(SyntheticVideo(seed=5, frames=60, width=64, height=64), folder / "full.mp4").read_bytes()
    (folder / "half.mp4").write_bytes(data[: len(data) // 2])
    return folder / "half.mp4"


@pytest.mark.parametrize("ask", ["nan:What?", "inf:What?", "-1:What?", "3:", "3:\udcff what?"])
def test_bad_ask_is_one_line_before_the_model_loads(capsys, ask):
    # an unknown model: had the check come after the model load, the error would name the model
    code = main(["stream", "--model", "no-such-model", "--video", "synthetic:seed=1,frames=4", "--ask", ask])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "hermes-lab: error:" in err and "no-such-model" not in err


def test_a_broken_stream_keeps_its_answers(capsys, half_written):
    args = ["stream", "--model", "tiny-embedded", "--video", str(half_written), "--ask", "1:What is there?",
            "--ask", "29:And now?", "--max-new-tokens", "2"]
    code = main([*args, "--json"])
    out, err = capsys.readouterr()
    # the streaming bar may share stderr's last line with the error: find the error wherever it starts
    error = re.findall(r"hermes-lab: error: [^\r\n]*", err)
    assert code == 2 and len(error) == 1 and "truncated or corrupt" in error[0] and "Traceback" not in err
    partial = json.loads(out)
    assert [a["question"] for a in partial["answers"]] == ["What is there?"]
    assert "truncated or corrupt" in partial["error"] and 0 < partial["frames"] < 60
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2 and "Q: What is there?" in out and "1 of 2 questions were answered" in out
    assert "truncated or corrupt" in err


def test_data_synth_has_a_stated_maximum(capsys, tmp_path):
    code = main(["data", "synth", "--frames", "50000000", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "at most" in err and not (tmp_path / "d").exists()
