"""The streaming-evaluation protocol as data: the manifest every ``eval`` folder holds (``protocol.json``).

Two evaluations are comparable when their manifests are equal: they inserted questions by the same rule,
streamed at the same chunk size and rate, showed the model the same view of each question, scored
forward-active questions the same way, extracted answers by the same rule (and its version), and ran on the
same dataset file (its hash). The policy, its budget and the model are *not* in the manifest: they are what
an evaluation compares. ``hermes-lab eval --protocol`` prints the manifest its settings give;
``figures --eval`` refuses to draw folders whose manifests differ unless ``--mixed-protocols`` is given.
``docs/protocol.md`` says the same in prose.

A rule whose behaviour changes gets a new version here (:data:`EXTRACTION_VERSIONS`, :data:`PROTOCOL_VERSION`),
so runs from before and after the change stop comparing equal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hermes_policy.eval.errors import EvalError
from hermes_policy.timeline import TIME_TOLERANCE

PROTOCOL_FORMAT = "hermes-lab/streaming-protocol"
PROTOCOL_VERSION = 1
PROTOCOL_FILE = "protocol.json"
#: generation limit of a free-form count answer (OVO-Bench REC)
COUNT_MAX_NEW_TOKENS = 8

#: answer extraction per scoring: (version, rule)
EXTRACTION_VERSIONS: dict[str, tuple[int, str]] = {
    "letter": (1, ("the question is asked with its options lettered A, B, ...; one forward, then each letter's "
                   "score is the log-sum-exp of the logits of its spellings as a first answer token (in context, "
                   "and ' X' when that is one token no other letter claims); the prediction is the highest "
                   "score, ties to the earliest letter")),
    "word-letter": (1, ("the question is asked with lettered options; the model writes its answer greedily up "
                        "to ' (' (at most 8 tokens, the opener appended past them), then the letters are scored "
                        "there as in 'letter'")),
    "cloze": (1, ("the question is asked without its options; each option's score is log P(its tokens, then an "
                  "end token | question), all options in one packed forward; the prediction is the highest, ties "
                  "to the earliest")),
    "count": (1, (f"free-form: the question alone, greedy decoding of at most {COUNT_MAX_NEW_TOKENS} tokens to "
                  "an end token; every run of digits in the answer is joined and compared with the count as text "
                  "(OVO-Bench's REC rule: '3 times' and '3' are 3, 'three' is wrong)")),
}


def manifest(*, chunk_frames: int, fps: float | None, reindex: str, scoring: str, system_prompt: str,
             data_sha256: str, data_format: str, videos: int, questions: int, limit: int | None,
             skipped_missing: Mapping[str, int] | None = None, count_questions: int = 0) -> dict[str, Any]:
    """The protocol manifest of an evaluation with these settings (JSON-ready; see the module docstring).

    Args:
        scoring: the resolved scorer of multiple-choice questions (``letter``, ``word-letter``, ``cloze``).
        data_sha256: :func:`~hermes_policy.eval.sweep.data_fingerprint` of the dataset as read.
        videos, questions: what this evaluation asks (after ``--limit`` and ``--skip-missing``).
        count_questions: how many of them are free-form counts (OVO-Bench REC), scored by ``count``.
    """
    if scoring not in EXTRACTION_VERSIONS or scoring == "count":
        raise EvalError(f"unknown scoring {scoring!r} for a protocol manifest")
    version, rule = EXTRACTION_VERSIONS[scoring]
    extraction: dict[str, Any] = {"multiple_choice": {"scoring": scoring, "version": version, "rule": rule}}
    if count_questions:
        count_version, count_rule = EXTRACTION_VERSIONS["count"]
        extraction["count"] = {"version": count_version, "rule": count_rule}
    return {
        "format": PROTOCOL_FORMAT,
        "version": PROTOCOL_VERSION,
        "question_insertion": {
            "rule": "a question at time t is asked before the first frame shown later than t: every frame "
                    "shown at or before t is in the stream, none after; frames waiting for a full chunk are "
                    "prefilled first (stream work, outside TTFT)",
            "time_tolerance_s": TIME_TOLERANCE,
            "past_the_end": "asked after the video's last frame (asked_at in the rows says when)",
            "stream_end": "a video's stream stops after its last question",
        },
        "stream": {
            "chunk_frames": chunk_frames,
            "fps": fps,
            "fps_rule": "video files are sampled at fps (null: every decoded frame); synthetic specs keep "
                        "their own rate",
            "reindex": reindex,
            "one_stream_per_video_and_run": True,
        },
        "question_view": {
            "modality": "text only: the question (and, for lettered scoring, its options) in the model's "
                        "chat template, after the cached stream",
            "future_frames": False,
            "earlier_questions": "none: every question and answer is rolled back out of the cache",
            "options_shown": scoring in ("letter", "word-letter"),
            "system_prompt": system_prompt,
        },
        "forward_active": {
            "rule": "OVO-Bench's: a forward question is asked repeatedly as the stream proceeds, once per "
                    "probe of its test_info at the probe's realtime, on the one stream of its video; each "
                    "probe is scored on its own and accuracy is over probes",
            "SSR": "'is this step being performed now?' as No/Yes options, the probe's type is the answer",
            "CRR": "'is there enough to answer yet?' as No/Yes options, the probe's type is the answer",
            "REC": "'how many times did they <activity>?' answered free-form, scored by the count rule",
        },
        "answer_extraction": extraction,
        "dataset": {
            "sha256": data_sha256,
            "format": data_format,
            "videos": videos,
            "questions": questions,
            "limit": limit,
            "skipped_missing": dict(skipped_missing) if skipped_missing else None,
        },
    }


def write_manifest(folder: str | Path, document: Mapping[str, Any]) -> Path:
    """Write ``protocol.json`` into an eval folder (atomically); returns its path."""
    from hermes_policy.atomic import atomic_write_json

    path = Path(folder) / PROTOCOL_FILE
    atomic_write_json(path, dict(document), EvalError)
    return path


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest an eval folder holds; None when it has none (an evaluation from before manifests)."""
    from hermes_policy.jsonfile import read_json

    path = Path(folder) / PROTOCOL_FILE
    if not path.exists():
        return None
    document = read_json(path, EvalError, PROTOCOL_FILE, expect=dict)
    if document.get("format") != PROTOCOL_FORMAT:
        raise EvalError(f"{path} is not a hermes-lab protocol manifest (format {document.get('format')!r})")
    return document


def differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two manifests (``stream.fps``, ``dataset.sha256``, ...)."""
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        name = f"{prefix}{key}"
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out.extend(differences(x, y, f"{name}."))
        elif x != y:
            out.append(name)
    return out


def check_comparable(folders: Sequence[str | Path], allow_mixed: bool = False) -> None:
    """Refuse (EvalError, one line) eval folders whose protocol manifests differ or are missing.

    One folder is always fine. ``allow_mixed`` lets them through (the caller's figure then mixes protocols,
    knowingly).
    """
    if len(folders) < 2 or allow_mixed:
        return
    manifests = [(Path(f), read_manifest(f)) for f in folders]
    missing = [str(f) for f, m in manifests if m is None]
    if missing:
        raise EvalError(f"no {PROTOCOL_FILE} in {', '.join(missing)} (evaluated before protocol manifests): "
                        "whether its runs compare with the others is unknown; rerun it, or pass --mixed-protocols")
    first_path, first = manifests[0]
    for path, other in manifests[1:]:
        diff = differences(first, other)  # type: ignore[arg-type]
        if diff:
            raise EvalError(f"{first_path} and {path} were evaluated under different protocols "
                            f"({', '.join(diff)} differ); their runs are not comparable on one plot; "
                            "pass --mixed-protocols to draw them anyway")


def format_manifest(document: Mapping[str, Any]) -> str:
    """The manifest as ``eval --protocol`` prints it (indented JSON)."""
    return json.dumps(document, indent=2, ensure_ascii=False)


__all__ = [
    "COUNT_MAX_NEW_TOKENS",
    "EXTRACTION_VERSIONS",
    "PROTOCOL_FILE",
    "PROTOCOL_FORMAT",
    "PROTOCOL_VERSION",
    "check_comparable",
    "differences",
    "format_manifest",
    "manifest",
    "read_manifest",
    "write_manifest",
]
