"""Load benchmark annotation files that point at videos you already have on disk.

Nothing here downloads anything: bring the benchmark's videos yourself and
point ``video_root`` at them. Every loader returns the same
:class:`~hermes_policy.data.dataset.VideoItem` list as the JSONL format, with
the questions of one video file grouped into one stream (asked in time order;
streaming is causal and every question is rolled back, so this equals asking
each on its own stream cut at its time, but ingests each video once).

Relative video paths resolve against ``video_root`` when given, else against
the annotation file's folder. Missing videos raise :class:`DatasetError`
listing the first few.

StreamingBench style (``format="streamingbench"``), the layout of its
``questions_*.json`` files: a JSON list of entries ::

    {"video_path": "./videos/sample_1.mp4",          # or "video"
     "questions": [{"time_stamp": "00:01:23",          # HH:MM:SS, MM:SS, or seconds
                    "question": "What is on the table now?",
                    "options": ["A. a cup", "B. a pen", ...],  # "A. " prefixes optional
                    "answer": "B",
                    "task_type": "Object Perception"}],
     ...}                                              # other keys ("time", "video_categories") ignored

Category: ``category_map[task_type]`` when given, else ``"real-time"`` (the
benchmark asks about the moment of asking); ``task_type`` is kept as the
question's ``task``.

OVO-Bench style (``format="ovobench"``), the layout of ``ovo_bench_new.json``:
a JSON list of entries ::

    {"id": 12, "video": "COIN/abc.mp4", "task": "EPM",
     "realtime": 83.5, "question": "...", "options": ["...", ...], "gt": 2}   # gt: index or letter

Category by task: ``backward`` for EPM, ASI, HLD; ``real-time`` for STU, OJR,
ATR, ACR, OCR, FPD; ``forward`` for REC, SSR, CRR (any other task is refused). The
task is kept as the question's ``task`` and ``id`` as its ``qid``.
OVO-Bench's forward tasks ship without options, as probes in ``test_info``
(``[{"realtime": s, "type": 0|1, ...}]``); SSR (with a per-probe ``step``) and
CRR (with the entry's ``question``) probes become two-option questions
``["No", "Yes"]`` (``type`` 1 = Yes) asked at each probe's ``realtime``; REC
probes (``[{"realtime": s, "count": n}]`` with the entry's ``activity``) become
free-form count questions "How many times did they <activity>?" asked at each
probe's ``realtime``, answered by generation and scored as OVO-Bench scores
them (the answer's digits equal the count).

Option texts like ``"A. red"``, ``"B) red"`` or ``"C.red"`` lose their letter
prefix (only when the letter is the option's own).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from hermes_policy.data.dataset import (
    MAX_OPTIONS,
    MIN_OPTIONS,
    BenchQuestion,
    DatasetError,
    VideoItem,
    check_question_text,
    check_time,
    check_unique_qids,
    check_videos_exist,
    count_question,
    read_dataset,
    resolve_video,
)
from hermes_policy.jsonfile import read_json
from hermes_policy.mc_format import OPTION_LETTERS

Format = Literal["auto", "jsonl", "streamingbench", "ovobench"]
FORMATS: tuple[str, ...] = ("auto", "jsonl", "streamingbench", "ovobench")

OVO_BACKWARD = ("EPM", "ASI", "HLD")
OVO_REAL_TIME = ("STU", "OJR", "ATR", "ACR", "OCR", "FPD")
OVO_FORWARD = ("REC", "SSR", "CRR")
YES_NO = ("No", "Yes")

_CLOCK_PART = re.compile(r"^\d+(\.\d+)?$")  # no sign, no exponent: "-00:01" and "1e3" are not clock times
_PREFIX = re.compile(r"^\s*([A-Ja-j])\s*[.:)\uff0e\uff1a]\s*")
_ANSWER = re.compile(r"^\s*\(?([A-Ja-j])(?:$|[\s.:)\uff0e\uff1a])")


def ovo_category(task: str) -> str:
    """OVO-Bench's three modes: backward tracing, real-time perception, forward responding; ValueError for a
    task OVO-Bench does not have (a guess would mislabel its questions)."""
    if task in OVO_BACKWARD:
        return "backward"
    if task in OVO_REAL_TIME:
        return "real-time"
    if task in OVO_FORWARD:
        return "forward"
    tasks = ", ".join(OVO_BACKWARD + OVO_REAL_TIME + OVO_FORWARD)
    raise ValueError(f"unknown OVO-Bench task {task!r}; its tasks are {tasks}")


def strip_option_letters(options: list[str]) -> list[str]:
    """``["A. red", "B.blue"]`` -> ``["red", "blue"]``; a prefix is removed only if it is the option's own letter."""
    out = []
    for i, text in enumerate(options):
        m = _PREFIX.match(text)
        if m and m.group(1).upper() == OPTION_LETTERS[i] and text[m.end():].strip():
            text = text[m.end():]
        out.append(text.strip())
    return out


def parse_timestamp(value: Any) -> float:
    """Seconds from ``83.5``, ``"83.5"``, ``"01:23"`` or ``"00:01:23"``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        form = "expected HH:MM:SS, MM:SS or seconds, each part a plain number and minutes and seconds below 60"
        parts = value.strip().split(":")
        if len(parts) > 3 or not all(_CLOCK_PART.match(p) for p in parts):
            raise ValueError(f"not a time: {value!r} ({form})")
        numbers = [float(p) for p in parts]
        if len(parts) > 1 and any(n >= 60 for n in numbers[1:]):
            raise ValueError(f"not a time: {value!r} ({form})")
        seconds = 0.0
        for n in numbers:
            seconds = seconds * 60 + n
    else:
        raise ValueError(f"not a time: {value!r}")
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"time must be a finite number of seconds >= 0, got {value!r}")
    return check_time(seconds)


def _answer_index(answer: Any, n_options: int) -> int:
    """An answer given as a letter (``"B"``, ``"B. blue"``) or a 0-based index."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        index = answer
    elif isinstance(answer, str) and (m := _ANSWER.match(answer)):
        index = OPTION_LETTERS.index(m.group(1).upper())
    else:
        raise ValueError(f"answer {answer!r} is neither an option letter nor an option index")
    if not 0 <= index < n_options:
        raise ValueError(f"answer {answer!r} points past the {n_options} options")
    return index


def _options(raw: Any) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(o, (str, int, float)) for o in raw):
        raise ValueError("'options' must be a list of texts")
    if not MIN_OPTIONS <= len(raw) <= MAX_OPTIONS:
        raise ValueError(f"'options' must hold {MIN_OPTIONS} to {MAX_OPTIONS} texts, got {len(raw)}")
    return strip_option_letters([str(o) for o in raw])


def _question(time: float, text: Any, options: list[str], index: int, category: str, task: str,
              qid: str = "") -> BenchQuestion:
    check_question_text(text, options)
    return BenchQuestion(time=time, frame=-1, question=text.strip(), options=tuple(options),
                         answer=OPTION_LETTERS[index], answer_text=options[index], category=category,
                         task=task, qid=qid)


def _read_json_list(path: Path) -> list[Any]:
    return read_json(path, DatasetError, "annotation file", expect=list)


def _group(pairs: list[tuple[str, BenchQuestion]]) -> list[VideoItem]:
    """Questions grouped by video (first-seen order), each video's sorted by time."""
    by_video: dict[str, list[BenchQuestion]] = {}
    for video, q in pairs:
        by_video.setdefault(video, []).append(q)
    return [VideoItem(v, sorted(qs, key=lambda q: q.time)) for v, qs in by_video.items()]


def _video_of(entry: dict, keys: tuple[str, ...]) -> str:
    for key in keys:
        value = entry.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise ValueError(f"missing the video path ({' or '.join(repr(k) for k in keys)})")


def load_streamingbench(
    path: str | Path, video_root: str | Path | None = None, category_map: Mapping[str, str] | None = None
) -> list[VideoItem]:
    """StreamingBench-style annotations (see the module docstring); videos are not checked here."""
    path = Path(path)
    root = Path(video_root) if video_root is not None else path.parent
    pairs: list[tuple[str, BenchQuestion]] = []
    for e, entry in enumerate(_read_json_list(path)):
        where = f"{path}: entry {e}"
        try:
            if not isinstance(entry, dict):
                raise ValueError("an entry must be a JSON object")
            video = resolve_video(_video_of(entry, ("video_path", "video")), root)
            questions = entry.get("questions")
            if not isinstance(questions, list):
                raise ValueError("missing 'questions' (a list)")
        except ValueError as err:
            raise DatasetError(f"{where}: {err}") from None
        for i, q in enumerate(questions):
            try:
                if not isinstance(q, dict):
                    raise ValueError("a question must be a JSON object")
                missing = [k for k in ("time_stamp", "question", "options", "answer") if k not in q]
                if missing:
                    raise ValueError(f"missing {', '.join(repr(k) for k in missing)}")
                options = _options(q["options"])
                task = str(q.get("task_type") or "")
                category = (category_map or {}).get(task, "real-time")
                pairs.append((video, _question(parse_timestamp(q["time_stamp"]), q["question"], options,
                                               _answer_index(q["answer"], len(options)), category, task)))
            except ValueError as err:
                raise DatasetError(f"{where}, question {i}: {err}") from None
    return _group(pairs)


#: OVO-Bench's REC question (its own words), then what the answer should be
REC_QUESTION = "How many times did they {activity}?\nAnswer with a single number (0, 1, 2, ...)."


def _ovo_forward(entry: dict, task: str, qid: str) -> list[BenchQuestion]:
    """SSR/CRR probes as No/Yes questions; REC probes as free-form count questions."""
    probes = entry.get("test_info")
    if not isinstance(probes, list):
        raise ValueError(f"a {task} entry needs 'question'/'options'/'gt' or a 'test_info' list")
    out = []
    for j, probe in enumerate(probes):
        if task == "REC":
            activity = entry.get("activity")
            if not isinstance(activity, str) or not activity.strip():
                raise ValueError("a REC entry needs its 'activity' (what is counted)")
            if not isinstance(probe, dict) or "realtime" not in probe or "count" not in probe:
                raise ValueError(f"test_info {j} needs 'realtime' and 'count'")
            out.append(count_question(parse_timestamp(probe["realtime"]),
                                      REC_QUESTION.format(activity=activity.strip()), probe["count"], "forward",
                                      task, f"{qid}/{j}" if qid else str(j)))
            continue
        if not isinstance(probe, dict) or "realtime" not in probe or probe.get("type") not in (0, 1):
            raise ValueError(f"test_info {j} needs 'realtime' and 'type' (0 or 1)")
        if task == "SSR":
            text = (f"This is one step of the procedure shown: {probe.get('step', '')}\n"
                    "Is the person in the video performing this step right now?")
        elif task == "CRR":
            text = (f"{entry.get('question', '')}\nDo the frames so far, especially the latest ones, "
                    "give enough information to answer this question?")
        else:
            raise ValueError(f"unknown forward task {task!r} without options")
        out.append(_question(parse_timestamp(probe["realtime"]), text, list(YES_NO), int(probe["type"]),
                             "forward", task, f"{qid}/{j}" if qid else str(j)))
    return out


def load_ovobench(path: str | Path, video_root: str | Path | None = None) -> list[VideoItem]:
    """OVO-Bench-style annotations (see the module docstring); videos are not checked here."""
    path = Path(path)
    root = Path(video_root) if video_root is not None else path.parent
    pairs: list[tuple[str, BenchQuestion]] = []
    for e, entry in enumerate(_read_json_list(path)):
        where = f"{path}: entry {e}"
        try:
            if not isinstance(entry, dict):
                raise ValueError("an entry must be a JSON object")
            video = resolve_video(_video_of(entry, ("video",)), root)
            task = str(entry.get("task") or "")
            if not task:
                raise ValueError("missing 'task'")
            qid = str(entry.get("id", ""))
            if all(k in entry for k in ("question", "options", "gt")):
                if "realtime" not in entry:
                    raise ValueError("missing 'realtime'")
                options = _options(entry["options"])
                pairs.append((video, _question(parse_timestamp(entry["realtime"]), entry["question"], options,
                                               _answer_index(entry["gt"], len(options)), ovo_category(task),
                                               task, qid)))
            elif task in OVO_FORWARD:
                pairs.extend((video, q) for q in _ovo_forward(entry, task, qid))
            else:
                missing = [k for k in ("realtime", "question", "options", "gt") if k not in entry]
                raise ValueError(f"missing {', '.join(repr(k) for k in missing)}")
        except ValueError as err:
            raise DatasetError(f"{where}: {err}") from None
    return _group(pairs)


def detect_format(path: str | Path) -> str:
    """``jsonl`` for a .jsonl file or a folder; for a JSON list, by its first entry's keys."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".jsonl":
        return "jsonl"
    data = _read_json_list(path)
    first = next((x for x in data if isinstance(x, dict)), None)
    if first is None:
        raise DatasetError(f"{path}: no entries to tell the annotation format from; pass --format")
    if "questions" in first:
        return "streamingbench"
    if "task" in first and ("realtime" in first or "test_info" in first):
        return "ovobench"
    raise DatasetError(
        f"{path}: cannot tell the annotation format (entries have keys {sorted(first)}); "
        "pass --format streamingbench or --format ovobench"
    )


def load_annotations(
    path: str | Path,
    format: str = "auto",
    video_root: str | Path | None = None,
    check_videos: bool = True,
    category_map: Mapping[str, str] | None = None,
) -> list[VideoItem]:
    """Load any supported file as VideoItems.

    Args:
        format: ``auto`` (see :func:`detect_format`), ``jsonl`` (our format; a
            folder means its ``dataset.jsonl``), ``streamingbench`` or ``ovobench``.
        video_root: folder relative video paths resolve against (default: the file's folder).
        check_videos: raise DatasetError listing missing video files.
        category_map: StreamingBench ``task_type`` -> category (default: all ``real-time``).
    """
    if format not in FORMATS:
        raise DatasetError(f"unknown annotation format {format!r}; choose from {', '.join(FORMATS)}")
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"annotation file {path} does not exist")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "jsonl":
        return read_dataset(path, video_root=video_root, check_videos=check_videos)
    if path.is_dir():
        raise DatasetError(f"{path} is a folder; a {fmt} annotation file is one JSON file")
    items = load_streamingbench(path, video_root, category_map) if fmt == "streamingbench" \
        else load_ovobench(path, video_root)
    check_unique_qids(items, path)
    if check_videos:
        check_videos_exist(items, path, Path(video_root) if video_root is not None else path.parent)
    return items


__all__ = [
    "FORMATS",
    "OVO_BACKWARD",
    "OVO_FORWARD",
    "OVO_REAL_TIME",
    "detect_format",
    "load_annotations",
    "load_ovobench",
    "load_streamingbench",
    "ovo_category",
    "parse_timestamp",
    "strip_option_letters",
]
