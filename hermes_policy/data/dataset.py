"""The streaming-QA dataset format: one video per JSONL line, its questions timed in stream seconds.

Mirrors how StreamingBench and OVO-Bench pose questions (a video plus
multiple-choice questions, each asked at a moment of the stream), in the
smallest shape the evaluation harness needs::

    {"video": "synthetic:seed=7,frames=32,fps=2,size=128x128",
     "questions": [{"time": 4.5, "question": "What colour is the circle now?",
                    "options": ["red", "blue", "green", "white"], "answer": "A",
                    "answer_text": "red", "category": "real-time"}]}

Per question, required: ``time`` (seconds >= 0), ``question`` (text), ``options``
(2-10 texts, lettered A, B, ... in order), ``answer`` (the correct letter).
Optional: ``answer_text`` (default: the correct option's text), ``category``
(default ``"unknown"``), ``frame`` (index of the last frame seen when asked,
default -1 = unknown), ``task`` (a benchmark's fine-grained task, e.g. OVO-Bench
``"EPM"``) and ``qid`` (the benchmark's question id). Unknown keys are ignored.

A free-form count question (OVO-Bench REC) has ``"answer_format": "count"``, no
``options`` (or an empty list) and the count as its ``answer`` (an integer >= 0, or its
digits); it is answered by generation and scored by :data:`~hermes_policy.eval.protocol.EXTRACTION_VERSIONS`'s
``count`` rule. Every other question is ``"choice"`` (the default).

``video`` is a ``synthetic:...`` spec or a video file path; a relative path
resolves against the JSONL file's folder (or ``video_root`` when given), so a
dataset folder can be moved as a whole.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hermes_policy.atomic import atomic_write_text
from hermes_policy.data.questions import CATEGORIES, Question, sample_questions
from hermes_policy.errors import HermesError, VideoError
from hermes_policy.inputs import MAX_STREAM_SECONDS, check_regular_file, check_text_length
from hermes_policy.jsonfile import loads_json
from hermes_policy.mc_format import OPTION_LETTERS
from hermes_policy.video.spec import SYNTHETIC_PREFIX, parse_synthetic_spec
from hermes_policy.video.synthetic import SyntheticVideo

#: the file a dataset folder holds (``hermes-lab data synth`` writes it, ``eval --data DIR`` reads it)
DATASET_FILE = "dataset.jsonl"
MIN_OPTIONS, MAX_OPTIONS = 2, len(OPTION_LETTERS)
#: how a question is answered: one of its options, or a free-form count (OVO-Bench REC)
ANSWER_FORMATS = ("choice", "count")


class DatasetError(HermesError):
    """A dataset or annotation file that cannot be used (names the file, and the line or entry)."""


@dataclass(frozen=True)
class BenchQuestion(Question):
    """A :class:`Question` that also keeps a benchmark's own labels.

    Attributes:
        task: fine-grained task (StreamingBench ``task_type``, OVO-Bench ``task``); "" if none.
        qid: the benchmark's question id; "" if none.
        answer_format: ``choice`` (one of the options) or ``count`` (free-form, no options; ``answer`` is
            the count's digits).
    """

    task: str = ""
    qid: str = ""
    answer_format: str = "choice"


@dataclass
class VideoItem:
    """One video and the questions asked while it streams.

    Attributes:
        video: a ``synthetic:...`` spec or an absolute-or-cwd-relative file path.
        questions: in time order (:func:`read_dataset` sorts them).
    """

    video: str
    questions: list[Question] = field(default_factory=list)

    @property
    def is_synthetic(self) -> bool:
        return self.video.startswith(SYNTHETIC_PREFIX)


# ----------------------------------------------------------------- helpers
def question_task(q: Question) -> str:
    """The question's benchmark task label, "" for plain questions."""
    return getattr(q, "task", "")


def answer_format(q: Question) -> str:
    """``count`` for a free-form count question, else ``choice``."""
    return getattr(q, "answer_format", "choice")


def count_question(time: float, text: str, count: Any, category: str, task: str = "", qid: str = "",
                   frame: int = -1) -> BenchQuestion:
    """A free-form count question (no options; the answer is the count's digits); ValueError for a bad count."""
    if isinstance(count, bool) or not (isinstance(count, int) or (isinstance(count, str) and count.strip().isdigit())):
        raise ValueError(f"a count question's answer must be an integer >= 0, got {count!r}")
    value = int(count)
    if value < 0:
        raise ValueError(f"a count question's answer must be an integer >= 0, got {count!r}")
    check_question_text(text, [])
    return BenchQuestion(time=time, frame=frame, question=text.strip(), options=(), answer=str(value),
                         answer_text=str(value), category=category, task=task, qid=qid, answer_format="count")


def question_to_dict(q: Question) -> dict[str, Any]:
    """JSON-ready dict of one question; empty ``task``/``qid`` are left out."""
    d = asdict(q)
    d["options"] = list(q.options)
    for key in ("task", "qid"):
        if key in d and not d[key]:
            del d[key]
    if d.get("answer_format") == "choice":
        del d["answer_format"]
    return d


def letter_index(letter: str, n_options: int) -> int:
    """0-based index of an option letter; ValueError unless it names one of ``n_options`` options."""
    text = letter.strip().upper() if isinstance(letter, str) else ""
    if len(text) != 1 or text not in OPTION_LETTERS[:n_options]:
        raise ValueError(f"answer {letter!r} is not one of {OPTION_LETTERS[0]}-{OPTION_LETTERS[n_options - 1]} "
                         f"({n_options} options)")
    return OPTION_LETTERS.index(text)


def check_question_text(text: Any, options: list[str]) -> None:
    """The checks every question gets, from any format: non-empty text within the length limit, options
    within it too, and no option twice (two identical options make the letter ambiguous); ValueError."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("'question' must be non-empty text")
    check_text_length(text, ValueError, "'question'")
    for i, option in enumerate(options):
        check_text_length(option, ValueError, f"option {OPTION_LETTERS[i]}")
    seen: dict[str, int] = {}
    for i, option in enumerate(options):
        key = option.strip().casefold()
        if key in seen:
            raise ValueError(f"options {OPTION_LETTERS[seen[key]]} and {OPTION_LETTERS[i]} are the same "
                             f"({option.strip()!r})")
        seen[key] = i


def check_time(t: Any) -> float:
    """A question's time in seconds: a finite number in [0, MAX_STREAM_SECONDS]; ValueError otherwise."""
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise ValueError(f"'time' must be a number of seconds >= 0, got {t!r}")
    if t > MAX_STREAM_SECONDS:
        raise ValueError(f"'time' {t!r} is past the limit of {MAX_STREAM_SECONDS} s (one week) into a stream")
    return float(t)


def check_unique_qids(items: Iterable[VideoItem], source: str | Path) -> None:
    """Question ids, where a benchmark gives them, name one question each; DatasetError names a repeated one."""
    seen: dict[str, str] = {}
    for item in items:
        for q in item.questions:
            qid = getattr(q, "qid", "")
            if not qid:
                continue
            if qid in seen:
                raise DatasetError(f"{source}: question id {qid!r} is used twice (videos {seen[qid]} and "
                                   f"{item.video}); ids must be unique")
            seen[qid] = item.video


def parse_question(d: Any) -> Question:
    """Validate one question object of the JSONL format; ValueError says what is wrong."""
    if not isinstance(d, dict):
        raise ValueError(f"a question must be a JSON object, got {type(d).__name__}")
    fmt = d.get("answer_format", "choice")
    if fmt not in ANSWER_FORMATS:
        raise ValueError(f"'answer_format' must be {' or '.join(ANSWER_FORMATS)}, got {fmt!r}")
    if fmt == "count":
        missing = [k for k in ("time", "question", "answer") if k not in d]
        if missing:
            raise ValueError(f"question is missing {', '.join(repr(k) for k in missing)}")
        if d.get("options") not in (None, []):
            raise ValueError("a count question has no 'options' (it is answered free-form)")
        frame = d.get("frame", -1)
        if isinstance(frame, bool) or not isinstance(frame, int):
            raise ValueError(f"'frame' must be an integer, got {frame!r}")
        return count_question(check_time(d["time"]), d["question"], d["answer"],
                              str(d.get("category") or "unknown"), str(d.get("task") or ""),
                              str(d.get("qid") or ""), frame)
    missing = [k for k in ("time", "question", "options", "answer") if k not in d]
    if missing:
        raise ValueError(f"question is missing {', '.join(repr(k) for k in missing)}")
    t = check_time(d["time"])
    text = d["question"]
    options = d["options"]
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ValueError("'options' must be a list of texts")
    if not MIN_OPTIONS <= len(options) <= MAX_OPTIONS:
        raise ValueError(f"'options' must hold {MIN_OPTIONS} to {MAX_OPTIONS} texts, got {len(options)}")
    check_question_text(text, options)
    index = letter_index(d["answer"], len(options))
    frame = d.get("frame", -1)
    if isinstance(frame, bool) or not isinstance(frame, int):
        raise ValueError(f"'frame' must be an integer, got {frame!r}")
    common = dict(
        time=float(t),
        frame=frame,
        question=text.strip(),
        options=tuple(options),
        answer=OPTION_LETTERS[index],
        answer_text=str(d.get("answer_text") or options[index]),
        category=str(d.get("category") or "unknown"),
    )
    task, qid = str(d.get("task") or ""), str(d.get("qid") or "")
    return BenchQuestion(**common, task=task, qid=qid) if task or qid else Question(**common)


def resolve_video(video: str, root: Path) -> str:
    """A synthetic spec unchanged; a relative file path joined to ``root`` (absolute paths stay)."""
    if video.startswith(SYNTHETIC_PREFIX):
        return video
    path = Path(os.path.expanduser(video))
    return str(path if path.is_absolute() else (root / path))


def missing_videos(items: Iterable[VideoItem]) -> list[str]:
    """File paths among ``items`` that do not exist (synthetic specs never miss)."""
    return [it.video for it in items if not it.is_synthetic and not Path(it.video).is_file()]


def check_videos_exist(items: Sequence[VideoItem], source: str | Path, root: Path | None = None) -> None:
    """Raise DatasetError listing the first few missing video files (never downloads anything)."""
    missing = missing_videos(items)
    if not missing:
        return
    shown = ", ".join(missing[:5]) + (f", ... ({len(missing) - 5} more)" if len(missing) > 5 else "")
    where = f" (relative paths were resolved against {root})" if root is not None else ""
    raise DatasetError(
        f"{source}: {len(missing)} of {len(items)} videos are missing{where}: {shown}; "
        "bring the videos and point --video-root at the folder that holds them"
    )


# ------------------------------------------------------------------ reading
def dataset_path(path: str | Path) -> Path:
    """``path`` itself, or ``path/dataset.jsonl`` when it is a folder."""
    path = Path(path)
    return path / DATASET_FILE if path.is_dir() else path


def read_dataset(path: str | Path, video_root: str | Path | None = None, check_videos: bool = True) -> list[VideoItem]:
    """Read a streaming-QA JSONL file (or a folder holding ``dataset.jsonl``).

    Blank lines are skipped. Questions of a video are sorted by time.

    Args:
        video_root: folder relative video paths resolve against (default: the file's folder).
        check_videos: also require every video file to exist and every synthetic spec to parse.

    Raises:
        DatasetError: naming ``file:line`` for bad JSON, a missing key, a bad value
            (e.g. an answer letter beyond the options); or listing missing videos.
    """
    path = check_regular_file(dataset_path(path), DatasetError, "dataset")
    root = Path(video_root) if video_root is not None else path.parent
    items: list[VideoItem] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        record = loads_json(line, DatasetError, f"{where}: the line")
        if not isinstance(record, dict):
            raise DatasetError(f"{where}: each line must be a JSON object with 'video' and 'questions'")
        video = record.get("video")
        if not isinstance(video, str) or not video.strip():
            raise DatasetError(f"{where}: missing 'video' (a file path or synthetic:... spec)")
        questions = record.get("questions")
        if not isinstance(questions, list):
            raise DatasetError(f"{where}: missing 'questions' (a list of question objects)")
        parsed = []
        for i, q in enumerate(questions):
            try:
                parsed.append(parse_question(q))
            except ValueError as e:
                raise DatasetError(f"{where}: question {i}: {e}") from None
        video = resolve_video(video.strip(), root)
        if check_videos and video.startswith(SYNTHETIC_PREFIX):
            try:
                parse_synthetic_spec(video)
            except VideoError as e:
                raise DatasetError(f"{where}: {e}") from None
        items.append(VideoItem(video, sorted(parsed, key=lambda q: q.time)))
    check_unique_qids(items, path)
    if check_videos:
        check_videos_exist(items, path, root)
    return items


# ------------------------------------------------------------------ writing
def _portable(video: str, folder: Path) -> str:
    """A path that resolves from the dataset's folder, as every reader resolves it: relative to that folder when
    the video is inside it (so the folder can move), else absolute (a path relative to the current folder,
    e.g. from ``--video-root vids``, would otherwise be read against the wrong folder)."""
    if video.startswith(SYNTHETIC_PREFIX):
        return video
    absolute = Path(os.path.abspath(video))
    try:
        return absolute.relative_to(os.path.abspath(folder)).as_posix()
    except ValueError:
        return str(absolute)


def write_dataset(items: Iterable[VideoItem], path: str | Path, home: str | Path | None = None) -> Path:
    """Write ``items`` as JSONL atomically (temporary file + ``os.replace``); returns the path.

    ``path`` may be a folder, which gets ``dataset.jsonl``. Video files inside
    the dataset's folder are written relative to it.

    Args:
        home: the folder the file will finally live in, when it is written into a staging folder
            that is moved there afterwards (default: ``path``'s own folder).
    """
    path = Path(path)
    if path.is_dir():
        path = path / DATASET_FILE
    folder = path.parent if home is None else Path(home)
    lines = []
    for item in items:
        record = {"video": _portable(item.video, folder),
                  "questions": [question_to_dict(q) for q in item.questions]}
        lines.append(json.dumps(record, ensure_ascii=False))
    return atomic_write_text(path, "".join(line + "\n" for line in lines), DatasetError)


# --------------------------------------------------------------- synthesis
def derived_seed(seed: int, *parts: object) -> int:
    """A 31-bit seed from ``seed`` and ``parts``; stable across runs and machines (unlike ``hash``)."""
    digest = hashlib.blake2b(":".join(str(p) for p in (seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


#: the largest synthetic dataset ``synthesize`` makes: beyond it a typo, not an experiment
MAX_SYNTH_FRAMES = 200_000
MAX_SYNTH_VIDEOS = 100_000


def synthesize(
    seed: int,
    videos: int,
    frames: int,
    fps: float = 2.0,
    size: tuple[int, int] = (128, 128),
    per_category: int = 2,
    min_frame: int | None = None,
    categories: Sequence[str] = CATEGORIES,
    progress: bool = True,
) -> list[VideoItem]:
    """A synthetic streaming-QA dataset with exact answers (no pixels are rendered).

    Video ``i`` is ``synthetic:seed=derived_seed(seed, "video", i),...``; its
    questions come from :func:`~hermes_policy.data.questions.sample_questions`
    on its event log with ``derived_seed(seed, "questions", i)``, so the same
    arguments always give the same dataset.

    Args:
        size: (width, height) in pixels.
        per_category: questions per category and video (fewer when a category
            has nothing to ask, e.g. no shape appeared yet).
        min_frame: earliest frame a question may be asked at; default
            ``min(frames - 1, max(3, frames // 8))``, so questions follow a few frames of video.
    """
    if isinstance(videos, bool) or not isinstance(videos, int) or videos < 1:
        raise DatasetError(f"synthesize: videos must be an integer >= 1, got {videos!r}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise DatasetError(f"synthesize: frames must be an integer >= 1, got {frames!r}")
    if frames > MAX_SYNTH_FRAMES or videos > MAX_SYNTH_VIDEOS:
        raise DatasetError(f"synthesize: at most {MAX_SYNTH_VIDEOS} videos of {MAX_SYNTH_FRAMES} frames "
                           f"(about {MAX_SYNTH_FRAMES / 7200:.0f} hours at 2 fps) each; got {videos} x {frames}")
    if per_category < 1:
        raise DatasetError(f"synthesize: per_category must be >= 1, got {per_category}")
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise DatasetError(f"synthesize: unknown categories {unknown}; choose from {', '.join(CATEGORIES)}")
    if min_frame is None:
        min_frame = min(frames - 1, max(3, frames // 8))
    min_frame = max(0, min(min_frame, frames - 1))
    width, height = size
    items = []
    # simulating the scenes is what takes the time: a bar once there is enough of it to wait for
    bar = tqdm(range(videos), unit="video", desc="simulating", file=sys.stderr, leave=False,
               disable=not progress or videos * frames < 20_000)
    for i in bar:
        try:
            video = SyntheticVideo(derived_seed(seed, "video", i), frames, fps=fps, width=width, height=height)
        except VideoError as e:
            raise DatasetError(f"synthesize: {e}") from None
        assert video.events is not None  # synthetic sources always carry their event log
        questions = sample_questions(video.events, seed=derived_seed(seed, "questions", i),
                                     per_category=per_category, min_frame=min_frame, categories=tuple(categories))
        items.append(VideoItem(video.name, list(questions)))
    return items


def summarize(items: Sequence[VideoItem]) -> dict[str, Any]:
    """Counts for a dataset: videos, questions, questions per category (sorted)."""
    per_category: dict[str, int] = {}
    for item in items:
        for q in item.questions:
            per_category[q.category] = per_category.get(q.category, 0) + 1
    return {
        "videos": len(items),
        "questions": sum(len(it.questions) for it in items),
        "categories": dict(sorted(per_category.items())),
    }


__all__ = [
    "ANSWER_FORMATS",
    "DATASET_FILE",
    "BenchQuestion",
    "DatasetError",
    "VideoItem",
    "answer_format",
    "atomic_write_text",
    "check_videos_exist",
    "count_question",
    "dataset_path",
    "derived_seed",
    "letter_index",
    "parse_question",
    "question_task",
    "question_to_dict",
    "read_dataset",
    "resolve_video",
    "summarize",
    "synthesize",
    "write_dataset",
]
