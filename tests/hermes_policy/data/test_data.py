"""Streaming-QA data: the JSONL format, synthesis, benchmark loaders and the ``data`` commands."""

from __future__ import annotations

import json
import re

import pytest
import typer
from typer.testing import CliRunner

from hermes_policy.data import (
    BenchQuestion,
    DatasetError,
    Question,
    VideoItem,
    load_annotations,
    read_dataset,
    synthesize,
    write_dataset,
)
from hermes_policy.data.cli import register
from hermes_policy.data.dataset import derived_seed, letter_index
from hermes_policy.data.loaders import parse_timestamp, strip_option_letters
from hermes_policy.video import SyntheticVideo, open_video, parse_synthetic_spec, write_mp4


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A real 6-frame mp4 (64x64, 2 fps) in its own folder."""
    folder = tmp_path_factory.mktemp("videos")
    return write_mp4(SyntheticVideo(seed=4, frames=6, width=64, height=64), folder / "clip.mp4")


def _q(**kw) -> dict:
    base = {"time": 1.0, "question": "What colour?", "options": ["red", "blue", "green"], "answer": "B"}
    return {**base, **kw}


# ------------------------------------------------------------------ JSONL
def test_jsonl_round_trip_keeps_every_field(tmp_path, clip):
    items = synthesize(seed=5, videos=2, frames=12, size=(64, 64))
    bench = BenchQuestion(time=2.5, frame=-1, question="Q?", options=("x", "y"), answer="B", answer_text="y",
                          category="backward", task="EPM", qid="17")
    items.append(VideoItem(str(clip), [bench]))
    path = write_dataset(items, tmp_path)  # a folder gets dataset.jsonl
    assert path == tmp_path / "dataset.jsonl"
    back = read_dataset(tmp_path)
    assert back == items
    assert type(back[2].questions[0]) is BenchQuestion and type(back[0].questions[0]) is Question
    # written atomically: no temporary file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.jsonl"]


def test_relative_video_paths_resolve_against_the_file(tmp_path, clip):
    (tmp_path / "v").mkdir()
    local = write_mp4(open_video(str(clip)), tmp_path / "v" / "a.mp4")
    write_dataset([VideoItem(str(local), [Question(0.5, 1, "Q?", ("a", "b"), "A", "a", "real-time")])], tmp_path)
    record = json.loads((tmp_path / "dataset.jsonl").read_text())
    assert record["video"] == "v/a.mp4"  # portable: the folder can move
    moved = tmp_path.rename(tmp_path.with_name(tmp_path.name + "_moved"))
    assert read_dataset(moved)[0].video == str(moved / "v" / "a.mp4")


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"video": "synthetic:seed=1,frames=4", "questions": [}', "not valid JSON"),
        ('["not", "an", "object"]', "JSON object"),
        ('{"questions": []}', "missing 'video'"),
        ('{"video": "synthetic:seed=1,frames=4"}', "missing 'questions'"),
        (json.dumps({"video": "synthetic:seed=1,frames=4", "questions": [{"time": 1, "question": "Q?",
                                                                           "options": ["a", "b"]}]}),
         "question 0: question is missing 'answer'"),
        (json.dumps({"video": "synthetic:seed=1,frames=4", "questions": [_q(answer="D")]}),
         "answer 'D' is not one of A-C (3 options)"),
        (json.dumps({"video": "synthetic:seed=1,frames=4", "questions": [_q(options=["only"], answer="A")]}),
         "2 to 10"),
        (json.dumps({"video": "synthetic:seed=1,frames=4", "questions": [_q(time=-2)]}), "'time'"),
        (json.dumps({"video": "synthetic:seed=1", "questions": [_q()]}), "missing frames"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    good = json.dumps({"video": "synthetic:seed=1,frames=4", "questions": [_q()]})
    path = tmp_path / "data.jsonl"
    path.write_text(good + "\n\n" + line + "\n")  # the blank line is skipped but still counted
    with pytest.raises(DatasetError) as err:
        read_dataset(path)
    assert f"{path}:3:" in str(err.value) and message in str(err.value)


def test_missing_dataset_and_missing_videos(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(tmp_path / "nope.jsonl")
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"video": "gone.mp4", "questions": [_q()]}) + "\n")
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / "gone.mp4"))):
        read_dataset(path)
    assert read_dataset(path, check_videos=False)[0].video == str(tmp_path / "gone.mp4")


def test_letter_index():
    assert letter_index("c", 3) == 2
    for bad in ("D", "", "AB", 1):
        with pytest.raises(ValueError):
            letter_index(bad, 3)


# -------------------------------------------------------------- synthesis
def test_synthesize_is_deterministic_and_answers_match_the_event_log():
    a = synthesize(seed=11, videos=3, frames=24, fps=4.0, size=(64, 48), per_category=3)
    assert a == synthesize(seed=11, videos=3, frames=24, fps=4.0, size=(64, 48), per_category=3)
    assert a != synthesize(seed=12, videos=3, frames=24, fps=4.0, size=(64, 48), per_category=3)
    assert len({it.video for it in a}) == 3  # every video has its own derived seed
    checked = {"real-time": 0, "counting": 0}
    for i, item in enumerate(a):
        spec = parse_synthetic_spec(item.video)
        assert spec == {"seed": derived_seed(11, "video", i), "frames": 24, "fps": 4.0, "width": 64, "height": 48}
        log = SyntheticVideo(**spec).events
        assert [q.time for q in item.questions] == sorted(q.time for q in item.questions)
        for q in item.questions:
            assert q.frame >= 3 and q.time == q.frame / 4.0  # asked after a few frames, at that frame's time
            assert q.options[letter_index(q.answer, len(q.options))] == q.answer_text
            state = log.state_at(q.frame)
            if m := re.fullmatch(r"What colour is the (\w+) now\?", q.question):
                assert state.find(shape=m.group(1)).colour == q.answer_text
                checked["real-time"] += 1
            elif m := re.fullmatch(r"What shape is the (\w+) object now\?", q.question):
                assert state.find(colour=m.group(1)).shape == q.answer_text
                checked["real-time"] += 1
            elif q.question == "How many shapes are on screen now?":
                assert int(q.answer_text) == len(state.objects)
                checked["real-time"] += 1
            elif q.question == "How many shapes have appeared so far?":
                assert int(q.answer_text) == sum(e.kind == "appear" for e in log.events_until(q.frame))
                checked["counting"] += 1
    assert checked["real-time"] >= 3 and checked["counting"] >= 3


def test_synthesize_rejects_bad_arguments():
    with pytest.raises(DatasetError, match="videos"):
        synthesize(seed=1, videos=0, frames=8)
    with pytest.raises(DatasetError, match="width"):
        synthesize(seed=1, videos=1, frames=8, size=(4, 4))


# ---------------------------------------------------------------- loaders
def test_parse_timestamp_and_option_prefixes():
    assert parse_timestamp("00:01:23") == 83 and parse_timestamp("01:23") == 83
    assert parse_timestamp(4.5) == 4.5 and parse_timestamp("4.5") == 4.5
    for bad in ("soon", "-1", True, None, "1:2:3:4"):
        with pytest.raises(ValueError):
            parse_timestamp(bad)
    assert strip_option_letters(["A. red", "B.blue", "C) green", "d: white"]) == ["red", "blue", "green", "white"]
    # a prefix that is not the option's own letter is text, not a label
    assert strip_option_letters(["B. red", "A. blue"]) == ["B. red", "A. blue"]


def test_streamingbench_style(tmp_path, clip):
    video = clip.name
    (tmp_path / clip.name).write_bytes(clip.read_bytes())
    anno = [
        {"time": "[0:00:00 - 0:01:00]", "video_path": f"./{video}", "video_categories": "x",
         "questions": [{"task_type": "Object Perception", "question": "What is shown now?", "time_stamp": "00:00:02",
                        "answer": "B", "options": ["A. a circle", "B. a square", "C. a star", "D. nothing"]}]},
        {"video": video,
         "questions": [{"task_type": "Counting", "question": "How many?", "time_stamp": 1,
                        "answer": "A. one", "options": ["one", "two"]}]},
    ]
    path = tmp_path / "questions_real.json"
    path.write_text(json.dumps(anno))
    items = load_annotations(path)  # auto-detected
    assert len(items) == 1  # both entries name the same file: one stream
    (item,) = items
    assert item.video == str(tmp_path / video)
    first, second = item.questions  # time order
    assert (first.time, first.options, first.answer, first.answer_text, first.task) == \
        (1.0, ("one", "two"), "A", "one", "Counting")
    assert (second.time, second.options[1], second.answer, second.category) == (2.0, "a square", "B", "real-time")
    mapped = load_annotations(path, format="streamingbench", category_map={"Counting": "counting"})
    assert [q.category for q in mapped[0].questions] == ["counting", "real-time"]

    anno[0]["questions"][0]["answer"] = "E"
    path.write_text(json.dumps(anno))
    with pytest.raises(DatasetError, match=r"entry 0, question 0: answer 'E' points past the 4 options"):
        load_annotations(path)


def test_ovobench_style(tmp_path, clip):
    anno = [
        {"id": 1, "video": "clip.mp4", "task": "EPM", "realtime": 2.0, "question": "What happened before?",
         "options": ["x", "y", "z"], "gt": 2},
        {"id": 2, "video": "clip.mp4", "task": "STU", "realtime": "00:00:01", "question": "Now?",
         "options": ["A. p", "B. q"], "gt": "A"},
        {"id": 3, "video": "clip.mp4", "task": "SSR",
         "test_info": [{"realtime": 1.5, "step": "stir", "type": 1}, {"realtime": 2.5, "step": "stir", "type": 0}]},
        {"id": 4, "video": "clip.mp4", "task": "REC", "activity": "jump", "test_info": [{"realtime": 2, "count": 3}]},
    ]
    path = tmp_path / "ovo_bench_new.json"
    path.write_text(json.dumps(anno))
    items = load_annotations(path, video_root=clip.parent)
    (item,) = items
    assert item.video == str(clip)
    got = [(q.time, q.task, q.category, q.options, q.answer, q.qid) for q in item.questions]
    assert got == [
        (1.0, "STU", "real-time", ("p", "q"), "A", "2"),
        (1.5, "SSR", "forward", ("No", "Yes"), "B", "3/0"),
        (2.0, "EPM", "backward", ("x", "y", "z"), "C", "1"),
        (2.0, "REC", "forward", (), "3", "4/0"),  # a free-form count, asked at its probe's time
        (2.5, "SSR", "forward", ("No", "Yes"), "A", "3/1"),
    ]
    rec = item.questions[3]
    assert rec.answer_format == "count" and rec.question.startswith("How many times did they jump?")
    # without the video root, clip.mp4 is looked for beside the annotations: missing
    with pytest.raises(DatasetError, match=r"1 of 1 videos are missing.*clip\.mp4") as err:
        load_annotations(path)
    assert "--video-root" in str(err.value)


def test_ovobench_bad_entry_and_unknown_layout(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps([{"video": "v.mp4", "task": "ASI", "realtime": 3, "question": "Q", "options": ["a"],
                                 "gt": 0}]))
    with pytest.raises(DatasetError, match=r"a\.json: entry 0: 'options' must hold 2 to 10"):
        load_annotations(path, format="ovobench", check_videos=False)
    path.write_text(json.dumps([{"clip": "v.mp4"}]))
    with pytest.raises(DatasetError, match="cannot tell the annotation format"):
        load_annotations(path)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_annotations(path, format="ovobench")
    with pytest.raises(DatasetError, match="unknown annotation format"):
        load_annotations(path, format="mvbench")


# ------------------------------------------------------------------- CLI
def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_data_synth_command(tmp_path):
    out = tmp_path / "synth"
    result = CliRunner().invoke(_app(), ["data", "synth", "--out", str(out), "--seed", "3", "--videos", "2",
                                         "--frames", "10", "--size", "64x64", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    items = read_dataset(out)
    assert summary["videos"] == 2 and summary["questions"] == sum(len(it.questions) for it in items)
    assert items == synthesize(seed=3, videos=2, frames=10, size=(64, 64))


def test_data_synth_mp4_and_convert(tmp_path, clip):
    out = tmp_path / "mp4set"
    result = CliRunner().invoke(_app(), ["data", "synth", "--out", str(out), "--videos", "1", "--frames", "6",
                                         "--size", "64x64", "--mp4"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "1 videos" in result.output
    record = json.loads((out / "dataset.jsonl").read_text())
    assert record["video"] == "videos/video_0000.mp4"
    assert open_video(read_dataset(out)[0].video).num_frames == 6

    anno = tmp_path / "sb.json"
    anno.write_text(json.dumps([{"video_path": str(clip), "questions": [
        {"time_stamp": "00:00:01", "question": "Q?", "options": ["A. a", "B. b"], "answer": "B", "task_type": "T"}]}]))
    result = CliRunner().invoke(_app(), ["data", "convert", str(anno), "--out", str(tmp_path / "conv")])
    assert result.exit_code == 0, result.output
    (item,) = read_dataset(tmp_path / "conv")
    assert item.video == str(clip) and item.questions[0].options == ("a", "b")
    assert item.questions[0].task == "T"


def test_data_synth_bad_size_is_a_dataset_error(tmp_path):
    result = CliRunner().invoke(_app(), ["data", "synth", "--out", str(tmp_path), "--size", "big"])
    assert isinstance(result.exception, DatasetError) and "--size" in str(result.exception)
