"""The causal memory map: what each question's answer needs, per layer (group) and frame age, by knockout.

Attention says where a layer looks; a knockout says what the answer depends on. For each question of
each stream, asked when the stream reaches it on a full cache (the eval's rule, :func:`interleave`),
:func:`map_streams` removes (``knockout``) or swaps in from a second stream (``patch``) the KV rows of

* each **frame-age bin** (normalised age d = age / (frames - 1) in B equal bins, bin 0 the newest;
  HERMES's d) at each **layer group**;
* each **in-frame position** (or position group, for models with many patches per frame) at each
  group, every frame at once: anchors are positions;
* and, for heads a study names as anchors (:func:`anchor_heads`), that head's favoured position
  (with a control position) in that head alone;

and reads the answer as the eval does (cloze or letter scores): the change in the correct option's
log-probability among the options (``delta``; ``drop`` = -delta, positive = needed) and whether the
chosen option flips. Each question also gives, from its one clean pass, every head's attention mass
on each bin and the *direct effect* of removing the bin from that head (:mod:`hermes_policy.knockout`).

The runtime (:class:`~hermes_policy.knockout.Rescorer`) prefills each question once and re-scores all
knockouts that start at one layer in one forward from that layer; ``naive_check`` questions are also
scored the obvious way (evict, ask, restore) to check the two agree and to time both (:class:`CostReport`).
:mod:`analysis.causal_stats` turns the rows into maps with intervals, correlations and tiers.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from analysis.errors import StudyError
from hermes_policy.knockout import SCORINGS, Cost, Knockout, Rescorer, Selection
from hermes_policy.models.base import ModelAdapter

MODES = ("knockout", "patch")
#: more in-frame positions than this are knocked out in this many contiguous groups
MAX_POSITION_BINS = 16
MAX_BINS = 64
MAX_ANCHOR_HEADS = 64


@dataclass(frozen=True)
class AnchorHead:
    """A head a study names as an anchor head: its layer, head index and most-attended in-frame position."""

    layer: int
    head: int
    position: int


@dataclass(frozen=True)
class CausalConfig:
    """What one causal map knocks out and how.

    Attributes:
        bins: frame-age bins over normalised age (bin 0 = the newest).
        layers: layer groups: ``"each"`` (one per layer), a count G (G contiguous groups of near-equal
            size), or ranges ``"0-1,2-5"`` covering each layer at most once.
        positions: also knock out each in-frame position (position group) at every group.
        mode: ``knockout`` (remove the rows) or ``patch`` (the next stream's same rows instead).
        scoring: ``auto`` (the model's ``mc_scoring``), ``cloze`` or ``letter``.
        chunk_frames: frames per ingest forward (as in eval).
        anchor_heads: heads whose favoured position is knocked out in that head alone (with a control).
        naive_check: the first N questions are also scored by eviction and a full ask per knockout.
        answer: run the answer-level knockouts; False keeps one clean pass per question (direct effects).
        max_rows: query rows per packed forward.
    """

    bins: int = 8
    layers: str = "each"
    positions: bool = True
    mode: str = "knockout"
    scoring: str = "auto"
    chunk_frames: int = 4
    anchor_heads: tuple[AnchorHead, ...] = ()
    naive_check: int = 0
    answer: bool = True
    max_rows: int = 4096

    def __post_init__(self) -> None:
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or not 1 <= self.bins <= MAX_BINS:
            raise StudyError(f"--bins must be an integer between 1 and {MAX_BINS}, got {self.bins!r}")
        if self.mode not in MODES:
            raise StudyError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.scoring not in ("auto", *SCORINGS):
            raise StudyError(f"--scoring must be auto, {', '.join(SCORINGS)}; got {self.scoring!r}")
        if not isinstance(self.chunk_frames, int) or self.chunk_frames < 1:
            raise StudyError(f"--chunk-frames must be >= 1, got {self.chunk_frames!r}")
        if not isinstance(self.naive_check, int) or self.naive_check < 0:
            raise StudyError(f"--naive-check must be >= 0 questions, got {self.naive_check!r}")
        if not isinstance(self.max_rows, int) or self.max_rows < 1:
            raise StudyError(f"max_rows must be >= 1, got {self.max_rows!r}")
        if len(self.anchor_heads) > MAX_ANCHOR_HEADS:
            raise StudyError(f"at most {MAX_ANCHOR_HEADS} anchor heads per map, got {len(self.anchor_heads)}")
        if self.mode == "patch" and self.anchor_heads:
            raise StudyError("anchor heads are knocked out per head, which patching cannot do (a KV row is "
                             "shared by its group's heads); map them with --mode knockout")
        parse_layer_groups(self.layers, None)  # the form, before any model is known

    def to_dict(self) -> dict[str, Any]:
        return {"bins": self.bins, "layers": self.layers, "positions": self.positions, "mode": self.mode,
                "scoring": self.scoring, "chunk_frames": self.chunk_frames,
                "anchor_heads": [[a.layer, a.head, a.position] for a in self.anchor_heads],
                "naive_check": self.naive_check, "answer": self.answer, "max_rows": self.max_rows}


def anchor_heads(rec, thresholds=None, limit: int = 16) -> tuple[AnchorHead, ...]:
    """The heads a study names as anchor heads: in-frame position concentration at least derive's threshold,
    the ``limit`` most concentrated first, each with its most-attended position (mean over steps and queries).

    Args:
        rec: a :class:`probes.recording.Recording` with ``position_mass``.
        thresholds: :class:`analysis.derive.RoleThresholds` (default: derive's).
    """
    from analysis.derive import RoleThresholds
    from analysis.metrics import anchor_structure, has

    if not has(rec, "position_mass"):
        raise StudyError("the study has no in-frame position mass, so it names no anchor heads; re-record it")
    limit = max(0, min(int(limit), MAX_ANCHOR_HEADS))
    conc = anchor_structure(rec)["concentration"]  # (L, H)
    t = thresholds or RoleThresholds()
    picked = sorted(((float(conc[i, h]), i, h) for i in range(conc.shape[0]) for h in range(conc.shape[1])
                     if float(conc[i, h]) >= t.concentration), reverse=True)[:limit]
    out = []
    for _, i, h in picked:
        favoured = rec["position_mass", i].double().nanmean(dim=(0, 1))[h]  # (P,)
        out.append(AnchorHead(i, h, int(favoured.nan_to_num(-1.0).argmax())))
    return tuple(sorted(out, key=lambda a: (a.layer, a.head)))


def parse_layer_groups(spec: str, num_layers: int | None) -> tuple[tuple[int, ...], ...]:
    """``"each"``, ``"3"`` or ``"0-1,2-5"`` -> groups of layers (only checked for form when ``num_layers`` is None)."""
    text = str(spec).strip()
    form = "--layers takes each, a group count G, or ranges such as 0-1,2-5"
    if text == "each":
        return tuple((i,) for i in range(num_layers or 0))
    if text.isdigit():
        g = int(text)
        if g < 1:
            raise StudyError(f"{form}; got {spec!r}")
        if num_layers is None:
            return ()
        if g > num_layers:
            raise StudyError(f"--layers {g}: the model has {num_layers} layers")
        edges = [round(i * num_layers / g) for i in range(g + 1)]
        return tuple(tuple(range(edges[i], edges[i + 1])) for i in range(g))
    groups = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise StudyError(f"{form}; got {spec!r}") from None
        if a < 0 or b < a:
            raise StudyError(f"{form}; got {spec!r}")
        groups.append(tuple(range(a, b + 1)))
    flat = [i for g in groups for i in g]
    if len(set(flat)) != len(flat):
        raise StudyError(f"--layers {spec!r} names a layer twice")
    if num_layers is not None and flat and max(flat) >= num_layers:
        raise StudyError(f"--layers {spec!r}: the model has {num_layers} layers (0-{num_layers - 1})")
    return tuple(groups)


def age_bins(units: Sequence[int], bins: int) -> list[tuple[int, ...]]:
    """The cached frame units (oldest first) in ``bins`` bins of normalised age; bin 0 holds the newest.

    A unit of age a among T has d = a / (T - 1) and goes to bin min(floor(d·B), B - 1); with fewer
    units than bins some bins are empty.
    """
    T = len(units)
    out: list[list[int]] = [[] for _ in range(bins)]
    for i, unit in enumerate(units):
        d = (T - 1 - i) / (T - 1) if T > 1 else 0.0
        out[min(int(d * bins), bins - 1)].append(int(unit))
    return [tuple(b) for b in out]


def position_groups(patches: int) -> list[tuple[int, ...]]:
    """In-frame positions, one group each, or :data:`MAX_POSITION_BINS` contiguous groups when there are more."""
    if patches <= MAX_POSITION_BINS:
        return [(p,) for p in range(patches)]
    edges = [round(i * patches / MAX_POSITION_BINS) for i in range(MAX_POSITION_BINS + 1)]
    return [tuple(range(edges[i], edges[i + 1])) for i in range(MAX_POSITION_BINS)]


def scoring_for(adapter: ModelAdapter, scoring: str) -> str:
    name = adapter.mc_scoring if scoring == "auto" else scoring
    if name not in SCORINGS:
        raise StudyError(f"{adapter.name} answers {name!r}, which a knockout cannot re-score (the word it writes "
                         f"first may change); pass --scoring cloze or --scoring letter")
    return name


@dataclass
class CostReport:
    """What the map cost, next to what naive asking would.

    Attributes:
        cost: the packed runtime's forwards, row-layers and seconds, and the naive counts for the same work.
        naive_questions: questions also scored naively; ``naive_seconds`` and ``packed_seconds`` time both
            on those questions alone (clean pass included for the packed side); ``max_abs_diff`` is the
            largest difference of any option score between the two.
    """

    cost: Cost = field(default_factory=Cost)
    naive_questions: int = 0
    naive_knockouts: int = 0
    naive_seconds: float = 0.0
    packed_seconds: float = 0.0
    max_abs_diff: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        c = self.cost
        def ratio(a, b):
            return a / b if b else math.nan

        return {"forwards": c.forwards, "naive_forwards": c.naive_forwards,
                "forward_ratio": ratio(c.naive_forwards, c.forwards),
                "row_layers": c.row_layers, "naive_row_layers": c.naive_row_layers,
                "row_layer_ratio": ratio(c.naive_row_layers, c.row_layers), "seconds": c.seconds,
                "naive_check": {"questions": self.naive_questions, "knockouts": self.naive_knockouts,
                                "naive_seconds": self.naive_seconds, "packed_seconds": self.packed_seconds,
                                "time_ratio": ratio(self.naive_seconds, self.packed_seconds),
                                "max_abs_diff": self.max_abs_diff}}


@dataclass
class CausalRun:
    """Everything one map measured (tables as row dicts; :mod:`analysis.causal_stats` aggregates them).

    Attributes:
        effects: one row per (question, knockout): the answer's change.
        heads: one row per (question, layer, selection, head): attention mass and direct effect.
        meta: model, streams, settings, groups, bins, positions, seconds.
    """

    effects: list[dict[str, Any]]
    heads: list[dict[str, Any]]
    meta: dict[str, Any]
    report: CostReport


def _log_probs(scores: torch.Tensor) -> torch.Tensor:
    """(..., n) option scores -> log-probabilities among the options (the eval's ``option_probs``, in logs)."""
    return torch.log_softmax(scores.double(), dim=-1)


def _variants(config: CausalConfig, groups, bins, pos_groups, patches: int) -> list[tuple[dict, Knockout]]:
    """Every knockout of one question, with the row fields that name it."""
    out = []
    patch = config.mode == "patch"
    for g, layers in enumerate(groups):
        for b, frames in enumerate(bins):
            if frames:
                out.append(({"kind": "age", "group": g, "bin": b, "head": -1, "position": -1,
                             "frames_hidden": len(frames)}, Knockout(layers, frames, None, None, patch)))
        if config.positions:
            for b, ps in enumerate(pos_groups):
                out.append(({"kind": "position", "group": g, "bin": b, "head": -1, "position": ps[0],
                             "frames_hidden": 0}, Knockout(layers, None, ps, None, patch)))
    for a in config.anchor_heads:
        group = next(g for g, layers in enumerate(groups) if a.layer in layers) if any(
            a.layer in gr for gr in groups) else -1
        control = (a.position + patches // 2) % patches
        for kind, pos in (("anchor", a.position), ("control", control)):
            out.append(({"kind": kind, "group": group, "bin": -1, "head": a.head, "position": pos, "layer": a.layer,
                         "frames_hidden": 0}, Knockout((a.layer,), None, (pos,), (a.head,))))
    return out


def map_question(rescorer: Rescorer, config: CausalConfig, groups, bins, pos_groups, patches: int, correct: int,
                 base: dict[str, Any], report: CostReport, naive: bool) -> tuple[list[dict], list[dict]]:
    """The rows of one question: its knockouts' effects on the answer and its heads' attention and direct effects."""
    selections = [Selection(frames=f) for f in bins] + [Selection(patches=p) for p in pos_groups]
    kinds = [("age", b) for b in range(len(bins))] + [("position", b) for b in range(len(pos_groups))]
    began = time.perf_counter()
    clean = rescorer.clean(selections)
    variants = _variants(config, groups, bins, pos_groups, patches) if config.answer else []
    scores = rescorer.score([k for _, k in variants]) if variants else torch.empty(0, len(clean.scores))
    packed_seconds = time.perf_counter() - began
    clean_lp, lp = _log_probs(clean.scores), _log_probs(scores)
    pick = int(torch.argmax(clean.scores))
    effects = []
    for (fields, k), s, lps in zip(variants, scores, lp):
        first, last = min(k.layers), max(k.layers)
        effects.append({**base, **fields, "layer_first": fields.get("layer", first), "layer_last": last,
                        "clean_logp": float(clean_lp[correct]), "logp": float(lps[correct]),
                        "delta": float(lps[correct] - clean_lp[correct]),
                        "drop": float(clean_lp[correct] - lps[correct]),
                        "flip": int(torch.argmax(s)) != pick, "clean_correct": pick == correct,
                        "correct": int(torch.argmax(s)) == correct})
        effects[-1].pop("layer", None)
    heads = []
    L, _, H = clean.direct.shape
    for layer in range(L):
        for i, (kind, b) in enumerate(kinds):
            if kind == "age" and not bins[b]:
                continue
            for h in range(H):
                heads.append({**base, "layer": layer, "kind": kind, "bin": b, "head": h,
                              "attention": float(clean.attention[layer, i, h]),
                              "direct": float(clean.direct[layer, i, h]),
                              "direct_null": float(clean.null[layer, i, h])})
    if naive and variants:
        layer_wide = [(i, k) for i, (_, k) in enumerate(variants) if k.heads is None]
        began = time.perf_counter()
        got = torch.stack([rescorer.naive(k) for _, k in layer_wide])
        report.naive_seconds += time.perf_counter() - began + _naive_clean_seconds(rescorer)
        report.packed_seconds += packed_seconds
        report.naive_questions += 1
        report.naive_knockouts += len(layer_wide)
        diff = (got - scores[[i for i, _ in layer_wide]]).abs().max()
        report.max_abs_diff = max(report.max_abs_diff, float(diff))
    return effects, heads


def _naive_clean_seconds(rescorer: Rescorer) -> float:
    """The naive map asks once unmodified too: time that ask."""
    began = time.perf_counter()
    rescorer._ask()
    return time.perf_counter() - began


def map_streams(adapter: ModelAdapter, items: Sequence, config: CausalConfig, progress: bool = True,
                fps: float | None = None, model: str | None = None) -> CausalRun:
    """Stream each item on a full cache and map every question of it (see the module docstring).

    Args:
        items: :class:`~hermes_policy.data.dataset.VideoItem` s with questions; in ``patch`` mode item i's
            donor is item i + 1 (the last one's: the first), which must have the same layout.
    """
    from hermes_policy.eval.budgets import open_item
    from hermes_policy.policies import FullPolicy
    from hermes_policy.session import SessionConfig, StreamingSession
    from hermes_policy.timeline import interleave

    items = [it for it in items if it.questions]
    if not items:
        raise StudyError("the dataset has no questions to map")
    if config.mode == "patch" and len(items) < 2:
        raise StudyError("--mode patch swaps rows in from a second stream; the dataset has one")
    scoring = scoring_for(adapter, config.scoring)
    groups = parse_layer_groups(config.layers, adapter.num_layers)
    if not groups:
        raise StudyError("--layers selects no layer")
    for a in config.anchor_heads:
        if a.layer >= adapter.num_layers or a.head >= adapter.num_heads:
            raise StudyError(f"anchor head {a.layer}.{a.head} is outside the model's {adapter.num_layers} layers x "
                             f"{adapter.num_heads} heads; was the study recorded on another model?")
    session_config = SessionConfig(chunk_frames=config.chunk_frames, max_new_tokens=1)
    report, effects, heads = CostReport(), [], []
    total = sum(len(it.questions) for it in items)
    bar = tqdm(total=total, unit="question", desc="causal map", file=sys.stderr, disable=not progress)
    started, asked, patches_seen = time.perf_counter(), 0, None
    with bar:
        for v, item in enumerate(items):
            session = StreamingSession(adapter, FullPolicy(), session_config)
            donor = donor_frames = None
            if config.mode == "patch":
                donor = StreamingSession(adapter, FullPolicy(), session_config)
                donor_frames = iter(open_item(items[(v + 1) % len(items)], fps).frames())
            done = 0
            for kind, entry in interleave(open_item(item, fps).frames(), list(enumerate(item.questions)),
                                          lambda p: p[1].time):
                if kind == "frame":
                    size = entry.image.shape[:2]
                    session.ingest([entry])
                    if donor is not None:
                        frame = next(donor_frames, None)
                        if frame is None:
                            raise StudyError(f"the donor stream of {item.video} ended before it; patching needs "
                                             "streams at least as long")
                        donor.ingest([frame])
                    continue
                qi, q = entry
                session.flush()
                if donor is not None:
                    donor.flush()
                patches = adapter.patches_per_frame(*size)
                patches_seen = patches
                units = sorted(set(session.cache.meta(0).frame.tolist()) - {-1})
                bins = age_bins(units, config.bins)
                pos = position_groups(patches) if config.positions else []
                for a in config.anchor_heads:
                    if a.position >= patches:
                        raise StudyError(f"anchor head {a.layer}.{a.head} favours position {a.position}, but a "
                                         f"frame has {patches} patches here")
                correct = "ABCDEFGHIJ".index(q.answer)
                rescorer = Rescorer(session, q.question, list(q.options), scoring,
                                    donor.cache if donor is not None else None, config.max_rows)
                base = {"stream": v, "video": item.video, "question_index": qi, "category": q.category,
                        "frames_seen": session.frames_seen}
                e, hd = map_question(rescorer, config, groups, bins, pos, patches, correct, base, report,
                                     asked < config.naive_check)
                report.cost.add(rescorer.cost)
                effects += e
                heads += hd
                asked, done = asked + 1, done + 1
                bar.update(1)
                bar.set_postfix_str(f"stream {v}")
                if done == len(item.questions):
                    break  # later frames cannot change an answer
    meta = {"model": model or adapter.name, "family": adapter.family, "scoring": scoring,
            "num_layers": adapter.num_layers, "num_heads": adapter.num_heads,
            "model_layers": list(adapter.kv_layers), "groups": [list(g) for g in groups],
            "patches_per_frame": patches_seen, "position_groups": [list(p) for p in position_groups(patches_seen)]
            if config.positions and patches_seen else [], "streams": [it.video for it in items],
            "questions": asked, "settings": config.to_dict(), "seconds": time.perf_counter() - started}
    return CausalRun(effects, heads, meta, report)


__all__ = ["MODES", "AnchorHead", "CausalConfig", "CausalRun", "CostReport", "age_bins", "anchor_heads", "map_question",
           "map_streams", "parse_layer_groups", "position_groups"]
