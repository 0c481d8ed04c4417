"""The bundled tiny lmms-eval tasks: synthetic streams whose answers are known exactly (hermes-lab's own scenes).

Three tasks over the same three synthetic videos (16 frames at 2 fps, 64x64, no file: the ``synthetic:...``
spec is the visual, and the plugin renders it), each question cut at its moment as lmms-eval's streaming
tasks cut theirs (the video is the prefix up to the frame shown when it is asked):

* ``hermes_tiny``: ``generate_until``, one question per document, scored by the answer word;
* ``hermes_tiny_mc``: the same questions as ``multiple_choice`` (``loglikelihood`` of each option);
* ``hermes_tiny_rounds``: ``generate_until_multi_round``, one document per video whose rounds are its three
  questions in time order, each round's video a longer prefix (OVO-Bench's forward layout).

The JSONL files are what :func:`make_docs` writes (``python -m hermes_policy.lmms.tasks.hermes_tiny.utils``
rewrites them; a test checks they are current). Nothing here imports lmms-eval or torch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEED, VIDEOS, FRAMES, FPS, SIZE = 5, 3, 16, 2, (64, 64)
PROMPT = "{question} Answer with one word."


def prefix_spec(spec: str, frames: int) -> str:
    """The synthetic spec cut to its first ``frames`` frames (a shorter synthetic video is a prefix)."""
    return re.sub(r"frames=\d+", f"frames={frames}", spec)


def make_docs() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(question docs, round docs) from hermes-lab's synthetic dataset (seeded: always the same)."""
    from hermes_policy.data.dataset import synthesize

    items = synthesize(seed=SEED, videos=VIDEOS, frames=FRAMES, fps=float(FPS), size=SIZE, per_category=1,
                       progress=False)
    questions, rounds = [], []
    for v, item in enumerate(items):
        probes = []
        for q in item.questions:
            doc = {"id": f"v{v}q{len(probes)}", "video": prefix_spec(item.video, q.frame + 1), "time": q.time,
                   "category": q.category, "question": q.question, "options": list(q.options),
                   "answer": "ABCDEFGHIJ".index(q.answer), "answer_text": q.answer_text}
            questions.append(doc)
            probes.append({k: doc[k] for k in ("video", "time", "question", "answer_text")})
        rounds.append({"id": f"v{v}", "video": item.video, "probes": probes})
    return questions, rounds


def write_docs() -> None:
    """Rewrite the task's JSONL files from :func:`make_docs`."""
    questions, rounds = make_docs()
    for name, docs in (("hermes_tiny.jsonl", questions), ("hermes_tiny_rounds.jsonl", rounds)):
        (HERE / name).write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")


# ------------------------------------------------------------- task hooks
def doc_to_visual(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> list[str]:
    """The question's video: the synthetic stream up to the question's moment."""
    return [doc["video"]]


def doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> str:
    return PROMPT.format(question=doc["question"])


def doc_to_choice(doc: dict[str, Any]) -> list[str]:
    return list(doc["options"])


def _matches(response: Any, answer: str) -> float:
    words = re.findall(r"[a-z0-9]+", str(response or "").lower())
    return float(bool(words) and words[0] == answer.lower())


def process_results(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    """Correct when the answer's first word is the answer word (``red``, ``2``, ``triangle``)."""
    return {"word_accuracy": _matches(results[0], doc["answer_text"])}


def rounds_doc_to_visual(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None) -> list[str]:
    """Round 0's video: the stream up to the first probe."""
    return [doc["probes"][0]["video"]]


def rounds_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict | None = None,
                       previous_output: list[str] | None = None, round_idx: int | None = None,
                       previous_round_info: Any = None):
    """lmms-eval's multi-round protocol: round 0's text, then ``(visuals, text, terminal, previous, info)``."""
    if round_idx is None:
        return PROMPT.format(question=doc["probes"][0]["question"])
    if round_idx >= len(doc["probes"]):
        return None, None, True, previous_output, None
    probe = doc["probes"][round_idx]
    return [probe["video"]], PROMPT.format(question=probe["question"]), False, previous_output, None


def rounds_process_results(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
    """The fraction of a stream's probes answered with the answer word."""
    answers = results[0] if results and isinstance(results[0], (list, tuple)) else results
    probes = doc["probes"]
    scores = [_matches(a, p["answer_text"]) for a, p in zip(answers, probes)]
    scores += [0.0] * (len(probes) - len(scores))  # an unanswered round counts as wrong
    return {"round_accuracy": sum(scores) / len(probes)}


if __name__ == "__main__":
    write_docs()
