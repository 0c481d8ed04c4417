"""Calibrate the study instrument on planted memory models: how much of a known structure it recovers.

For each family and each random planted configuration (:mod:`hermes_policy.models.planted`)
we run the study exactly as ``hermes-lab study`` does (:func:`probes.capture.capture`,
the same seam, pseudo-queries and reducers), derive tiers exactly as ``derive`` does
(:func:`analysis.derive.derive_tiers`), and score the verdict against the ground truth:

* **layer-tier accuracy** over layers with a memory role (a planted *diffuse* layer has
  none; the confusion matrix shows where those go), and its confusion matrix;
* **head-role accuracy** over heads with a role: recency heads should land in the
  sensory tier, mixed heads in working, anchor heads in long-term;
* **anchor AUROC**: anchor heads against recency and diffuse heads, ranked by the
  measured anchor concentration (mixed heads, half anchor by construction, are left
  out), with the TPR and FPR at derive's own threshold (concentration >= 0.2);
* **recency Spearman**: measured decay k against planted decay, over the heads that
  have one (recency and mixed), per configuration, then the mean;
* **anchor position accuracy**: anchor heads whose most-attended in-frame position is
  the planted one;
* the same layer accuracy for HERMES's **fixed 10% / 70% split** as the baseline.

Accuracies and the AUROC pool every layer or head of a family; Spearman is a mean
over configurations, since only ranks within one model are comparable.

Every planted family is covered (:data:`hermes_policy.models.planted.FAMILIES`: the first four,
then Qwen3-VL, Qwen3.5, InternVL3.5 and SmolVLM2). A layer is a cache layer, as the study records
it: for Qwen3.5's hybrid decoder only its full-attention layers, which is where its roles are planted.
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

from analysis.derive import TIERS, RoleThresholds, TierAssignment, derive_tiers
from analysis.errors import StudyError
from analysis.metrics import anchor_structure, recency_index, spearman
from hermes_policy.jsonfile import json_safe
from probes.recording import Recording

#: derive's tier methods scored by validate (the first is the instrument's default)
METHODS = ("roles", "changepoint", "hermes-fixed")
TRUTH_KINDS = ("sensory", "working", "long-term", "diffuse")


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (Mann–Whitney, ties count half); NaN without both classes."""
    pos = [s for s, y in zip(scores, labels) if y and math.isfinite(s)]
    neg = [s for s, y in zip(scores, labels) if not y and math.isfinite(s)]
    if not pos or not neg:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def roc_points(scores: Sequence[float], labels: Sequence[bool]) -> list[tuple[float, float, float]]:
    """(threshold, FPR, TPR) for every distinct score, from the highest down, starting at (inf, 0, 0)."""
    pairs = sorted(((s, y) for s, y in zip(scores, labels) if math.isfinite(s)), key=lambda p: -p[0])
    P = sum(y for _, y in pairs)
    N = len(pairs) - P
    out, tp, fp = [(math.inf, 0.0, 0.0)], 0, 0
    for i, (s, y) in enumerate(pairs):
        tp += y
        fp += not y
        if i + 1 == len(pairs) or pairs[i + 1][0] != s:
            out.append((s, fp / N if N else math.nan, tp / P if P else math.nan))
    return out


@dataclass
class ConfigScore:
    """One planted configuration's study, scored: a row of ``rows.parquet`` plus its heads and layers."""

    row: dict[str, Any]
    heads: list[dict[str, Any]]
    layers: list[dict[str, Any]]


def truth_matches(truth: dict[str, Any], tiers: TierAssignment) -> tuple[list[bool | None], list[list[bool | None]]]:
    """Whether ``tiers`` match a planted truth: per layer, and per head (as ``tiers.head_tiers`` gives them).

    A layer matches when its tier is its planted kind, a head when its tier is the one its role plants
    (recency -> sensory, mixed -> working, anchor -> long-term); None where the truth has no role (diffuse).
    """
    from hermes_policy.models.planted import ROLE_TIER

    kinds, roles = list(truth["layers"]), truth["roles"]
    if len(kinds) != tiers.num_layers:
        raise StudyError(f"the planted truth has {len(kinds)} layers but the recording has {tiers.num_layers}; "
                         "was it recorded with another version of the planted models?")
    heads = tiers.head_tiers(len(roles[0]))
    if any(len(t) != len(r) for t, r in zip(heads, roles)):
        raise StudyError(f"the planted truth has {len(roles[0])} heads per layer but the recording {len(heads[0])}")
    layers = [None if k == "diffuse" else k == t for k, t in zip(kinds, tiers.layers)]
    return layers, [[None if r not in ROLE_TIER else ROLE_TIER[r] == t for r, t in zip(rr, tt)]
                    for rr, tt in zip(roles, heads)]


def count_matches(matches: Sequence[bool | None]) -> tuple[int, int]:
    """(matching, scored) of a list of matches, None not scored."""
    scored = [m for m in matches if m is not None]
    return sum(scored), len(scored)


def score_recording(rec: Recording, truth: dict[str, Any], methods: Sequence[str] = METHODS,
                    thresholds: RoleThresholds | None = None) -> ConfigScore:
    """Score a study of a planted model against its ground truth (:meth:`PlantedConfig.ground_truth`)."""
    kinds: list[str] = truth["layers"]
    roles: list[list[str]] = truth["roles"]
    L, H = len(kinds), len(roles[0])
    if rec.num_layers != L or rec.num_heads != H:
        raise StudyError(f"the recording has {rec.num_layers}x{rec.num_heads} layers x heads; the truth {L}x{H}")
    rec_idx, anchors = recency_index(rec), anchor_structure(rec)
    # the in-frame position each head favours most, over every step and query kind
    favoured = torch.stack([rec["position_mass", i].double().nanmean(dim=(0, 1)).argmax(-1) for i in range(L)])
    tiers = {m: derive_tiers(rec, m, None, thresholds) for m in methods}
    row: dict[str, Any] = {"family": truth["family"], "seed": truth["seed"], "strength": truth["strength"],
                           "layers": L, "heads": H,
                           "diffuse_first": kinds[0] == "diffuse", "out_of_order": not _in_depth_order(kinds)}
    for m, t in tiers.items():
        layer_ok, head_ok = truth_matches(truth, t)
        row[f"layer_correct.{m}"], row["layer_total"] = count_matches(layer_ok)
        row[f"head_correct.{m}"], row["head_total"] = count_matches([x for r in head_ok for x in r])
    row["head_correct"] = row[f"head_correct.{methods[0]}"]
    main_heads = tiers[methods[0]].head_tiers(H)
    heads = []
    decay, planted_decay = [], []
    for i in range(L):
        for h in range(H):
            role = roles[i][h]
            pred = main_heads[i][h]
            k = float(rec_idx["decay"][i, h])
            entry = {"family": truth["family"], "seed": truth["seed"], "layer": i, "head": h, "role": role,
                     "layer_kind": kinds[i], "decay": truth["decay"][i][h], "anchor_gap": truth["anchor_gap"][i][h],
                     "anchor_position": truth["anchor_position"][i][h], "measured_decay": k,
                     "favoured_position": int(favoured[i, h]),
                     "newest10": float(rec_idx["newest10"][i, h]),
                     "concentration": float(anchors["concentration"][i, h]),
                     "periodicity": float(anchors["periodicity"][i, h]), "predicted": pred}
            heads.append(entry)
            if truth["decay"][i][h] > 0:
                decay.append(k)
                planted_decay.append(truth["decay"][i][h])
    row["recency_spearman"] = spearman(torch.tensor(decay), torch.tensor(planted_decay)) if len(decay) >= 3 \
        else math.nan
    layers = [{"family": truth["family"], "seed": truth["seed"], "layer": i, "truth": kinds[i],
               **{f"predicted.{m}": t.layers[i] for m, t in tiers.items()}} for i in range(L)]
    return ConfigScore(row, heads, layers)


def _in_depth_order(kinds: Sequence[str]) -> bool:
    order = [TIERS.index(k) for k in kinds if k != "diffuse"]
    return order == sorted(order)


def confusion(layers: Sequence[dict[str, Any]], method: str) -> list[list[int]]:
    """(4 truth kinds x 3 predicted tiers) counts; rows :data:`TRUTH_KINDS`, columns :data:`TIERS`."""
    m = [[0] * len(TIERS) for _ in TRUTH_KINDS]
    for entry in layers:
        m[TRUTH_KINDS.index(entry["truth"])][TIERS.index(entry[f"predicted.{method}"])] += 1
    return m


def summarise(rows: Sequence[dict[str, Any]], heads: Sequence[dict[str, Any]], layers: Sequence[dict[str, Any]],
              methods: Sequence[str] = METHODS, thresholds: RoleThresholds | None = None) -> dict[str, Any]:
    """One family's scores (the ``--json`` record), from its configurations' rows, heads and layers."""
    def ratio(num: str, den: str) -> float:
        d = sum(r[den] for r in rows)
        return sum(r[num] for r in rows) / d if d else math.nan

    scored = [h for h in heads if h["role"] in ("anchor", "recency", "diffuse")]
    labels = [h["role"] == "anchor" for h in scored]
    conc = [h["concentration"] for h in scored]
    threshold = (thresholds or RoleThresholds()).concentration
    called = [c >= threshold for c in conc]  # derive's own threshold for "this head has anchors"
    P, N = sum(labels), len(labels) - sum(labels)
    rhos = [r["recency_spearman"] for r in rows if math.isfinite(r["recency_spearman"])]
    anchored = [h for h in heads if h["role"] == "anchor"]
    out: dict[str, Any] = {
        "configs": len(rows),
        "layer_tier_accuracy": ratio(f"layer_correct.{methods[0]}", "layer_total"),
        "head_role_accuracy": ratio("head_correct", "head_total"),
        "anchor_auroc": auroc(conc, labels),
        "recency_spearman": sum(rhos) / len(rhos) if rhos else math.nan,
        "fixed_split_layer_accuracy": ratio("layer_correct.hermes-fixed", "layer_total")
        if "hermes-fixed" in methods else math.nan,
        "anchor_tpr": sum(c and y for c, y in zip(called, labels)) / P if P else math.nan,
        "anchor_fpr": sum(c and not y for c, y in zip(called, labels)) / N if N else math.nan,
        "recency_spearman_min": min(rhos) if rhos else math.nan,
        # anchor heads whose most-attended in-frame position is the planted one
        "anchor_position_accuracy": sum(h["favoured_position"] == h["anchor_position"] for h in anchored)
        / len(anchored) if anchored else math.nan,
        "layers_scored": sum(r["layer_total"] for r in rows),
        "heads_scored": sum(r["head_total"] for r in rows),
        "method": methods[0],
        "confusion": {m: confusion(layers, m) for m in methods},
    }
    for m in methods[1:]:
        out[f"layer_tier_accuracy.{m}"] = ratio(f"layer_correct.{m}", "layer_total")
        out[f"head_role_accuracy.{m}"] = ratio(f"head_correct.{m}", "head_total")
    out["periodicity_auroc"] = auroc([h["periodicity"] for h in scored], labels)
    return out


MAX_CONFIGS = 10_000
MAX_FRAMES = 4096  # planted models place 16 tokens per frame; their slow rotary pairs stay linear to here


@dataclass(frozen=True)
class ValidateConfig:
    """What ``hermes-lab validate`` runs.

    Attributes:
        families: planted families to validate.
        configs: random configurations per family.
        seed: the first configuration's seed (configuration i uses seed + i).
        frames: frames per study video (a ``synthetic:`` scene, seed = the configuration's).
        chunk_frames: frames per study step.
        strength: planted signal strength (1 = the generator's ranges).
        methods: derive tier methods to score; the first is the one the head scores use.
        thresholds: the role thresholds derive uses (method ``roles``; also the anchor call's threshold).
    """

    families: tuple[str, ...]
    configs: int = 5
    seed: int = 0
    frames: int = 64
    chunk_frames: int = 4
    strength: float = 1.0
    methods: tuple[str, ...] = METHODS
    thresholds: RoleThresholds = field(default_factory=RoleThresholds)

    def __post_init__(self) -> None:
        from hermes_policy.models.planted import FAMILIES, MAX_SEED, MAX_STRENGTH

        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise StudyError(f"unknown family {bad[0] if bad else '(none)'}; use one of {', '.join(FAMILIES)} or all")
        if not 1 <= self.configs <= MAX_CONFIGS:
            raise StudyError(f"--configs must be between 1 and {MAX_CONFIGS}, got {self.configs}")
        if not 0 <= self.seed <= MAX_SEED - self.configs + 1:
            raise StudyError(f"--seed must be between 0 and {MAX_SEED - self.configs + 1} "
                             f"(seeds run to SEED+configs-1), got {self.seed}")
        if self.chunk_frames < 1:
            raise StudyError(f"--chunk must be >= 1, got {self.chunk_frames}")
        if not 2 * self.chunk_frames <= self.frames <= MAX_FRAMES:
            raise StudyError(f"--frames must be at least two chunks ({2 * self.chunk_frames}) and at most "
                             f"{MAX_FRAMES}, got {self.frames}")
        if not (math.isfinite(self.strength) and 0 <= self.strength <= MAX_STRENGTH):
            raise StudyError(f"--strength must be a number between 0 and {MAX_STRENGTH:g}, got {self.strength}")


@dataclass
class Validation:
    """Everything one validate run measured."""

    config: ValidateConfig
    rows: list[dict[str, Any]] = field(default_factory=list)
    heads: list[dict[str, Any]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """``{"families": {FAMILY: scores}}``, the document ``--json`` prints."""
        out = {}
        for family in self.config.families:
            pick = [r for r in self.rows if r["family"] == family]
            if pick:
                out[family] = summarise(pick, [h for h in self.heads if h["family"] == family],
                                        [x for x in self.layers if x["family"] == family], self.config.methods,
                                        self.config.thresholds)
        return {"families": out}


def study_planted(adapter, frames: int, chunk_frames: int, video_seed: int) -> Recording:
    """The study of one planted model, exactly as ``hermes-lab study`` records it (pseudo-queries, full cache)."""
    from hermes_policy.video import open_video
    from probes.capture import StudyConfig, capture

    source = open_video(f"synthetic:seed={video_seed},frames={frames}")
    return capture(adapter, source, StudyConfig(queries="pseudo", chunk_frames=chunk_frames), progress=False)


def run_validation(config: ValidateConfig, progress: bool = True) -> Validation:
    """Draw, build, study and score ``config.configs`` planted models per family."""
    from hermes_policy.models.planted import build_planted, draw_planted

    result = Validation(config)
    jobs = [(f, config.seed + i) for f in config.families for i in range(config.configs)]
    bar = tqdm(jobs, unit="model", desc="validate", file=sys.stderr, disable=not progress)
    for family, seed in bar:
        bar.set_postfix_str(f"{family} seed {seed}")
        started = time.perf_counter()
        planted = draw_planted(seed, family, strength=config.strength)
        adapter = build_planted(planted)
        rec = study_planted(adapter, config.frames, config.chunk_frames, seed)
        scored = score_recording(rec, planted.ground_truth(), config.methods, config.thresholds)
        scored.row.update(frames=config.frames, chunk_frames=config.chunk_frames,
                          kv_heads=planted.num_kv_heads, anchor_slots=len(planted.anchor_positions),
                          seconds=round(time.perf_counter() - started, 3))
        result.rows.append(scored.row)
        result.heads += scored.heads
        result.layers += scored.layers
    return result




# --------------------------------------------------------------------------- sweeps, tables, output
TARGETS = {"layer_tier_accuracy": 0.95, "head_role_accuracy": 0.90, "anchor_auroc": 0.95, "recency_spearman": 0.9}
BREAKDOWN_METRICS = (*TARGETS, "fixed_split_layer_accuracy")


def sweep_configs(base: ValidateConfig, strengths: Sequence[float], frames: Sequence[int]) -> list[ValidateConfig]:
    """The main run (first strength, first frame count), then one knob at a time: the other strengths at the
    first frame count, the other frame counts at the first strength."""
    from dataclasses import replace

    main = replace(base, strength=strengths[0], frames=frames[0])
    return [main, *(replace(main, strength=s) for s in strengths[1:]),
            *(replace(main, frames=f) for f in frames[1:])]


def run_sweep(configs: Sequence[ValidateConfig], progress: bool = True) -> list[Validation]:
    return [run_validation(c, progress) for c in configs]


def report(runs: Sequence[Validation]) -> dict[str, Any]:
    """The ``--json`` document: ``families`` (the main run) plus, when swept, ``breakdown`` rows and settings."""
    main = runs[0]
    doc: dict[str, Any] = {**main.summary(), "settings": _settings(main.config)}
    if len(runs) > 1:
        doc["breakdown"] = breakdown_rows(runs)
    return json_safe(doc)


def _settings(c: ValidateConfig) -> dict[str, Any]:
    return {"families": list(c.families), "configs": c.configs, "seeds": [c.seed, c.seed + c.configs - 1],
            "frames": c.frames, "chunk_frames": c.chunk_frames, "strength": c.strength, "methods": list(c.methods),
            "thresholds": {"decay": c.thresholds.decay, "concentration": c.thresholds.concentration}}


def breakdown_rows(runs: Sequence[Validation]) -> list[dict[str, Any]]:
    """One row per (knob, value, family, metric): how the scores move as the planted signal or stream shrinks."""
    main = runs[0].config
    rows = []
    for run in runs:
        c = run.config
        knobs = [k for k, same in (("strength", c.strength == main.strength), ("frames", c.frames == main.frames))
                 if run is runs[0] or not same]
        for family, scores in run.summary()["families"].items():
            for knob in knobs:
                for metric in BREAKDOWN_METRICS:
                    rows.append({"family": family, "knob": knob, "value": float(getattr(c, knob)),
                                 "metric": metric, "score": scores[metric]})
    return rows


def validation_tables(runs: Sequence[Validation]) -> dict[str, Any]:
    """Tidy tables for the figures and files: rows, heads, layers (every run), confusion, roc, roc_point, breakdown."""
    import pandas as pd

    def tagged(attr: str) -> pd.DataFrame:
        return pd.DataFrame([{**x, "frames": r.config.frames, "strength": r.config.strength}
                             for r in runs for x in getattr(r, attr)])

    main = runs[0]
    summary = main.summary()["families"]
    confusion_rows, roc_rows, point_rows = [], [], []
    for family, scores in summary.items():
        for method, matrix in scores["confusion"].items():
            for i, truth in enumerate(TRUTH_KINDS):
                for j, pred in enumerate(TIERS):
                    confusion_rows.append({"family": family, "method": method, "truth": truth, "predicted": pred,
                                           "count": matrix[i][j]})
        heads = [h for h in main.heads if h["family"] == family and h["role"] in ("anchor", "recency", "diffuse")]
        points = roc_points([h["concentration"] for h in heads], [h["role"] == "anchor" for h in heads])
        roc_rows += [{"family": family, "threshold": t, "fpr": f, "tpr": p, "auroc": scores["anchor_auroc"]}
                     for t, f, p in points]
        point_rows.append({"family": family, "fpr": scores["anchor_fpr"], "tpr": scores["anchor_tpr"],
                           "threshold": main.config.thresholds.concentration})
    tables = {"rows": tagged("rows"), "heads": tagged("heads"), "layers": tagged("layers"),
              "confusion": pd.DataFrame(confusion_rows), "roc": pd.DataFrame(roc_rows),
              "roc_point": pd.DataFrame(point_rows)}
    if len(runs) > 1:
        tables["breakdown"] = pd.DataFrame(breakdown_rows(runs))
    return tables


def format_report(doc: dict[str, Any]) -> str:
    """The table ``hermes-lab validate`` prints: per family, each score against its target."""
    cols = [("layer_tier_accuracy", "layer acc"), ("head_role_accuracy", "head acc"), ("anchor_auroc", "anchor AUROC"),
            ("recency_spearman", "recency rho"), ("fixed_split_layer_accuracy", "fixed-split acc"),
            ("layer_tier_accuracy.changepoint", "changepoint acc")]
    head = f"{'family':<11} {'configs':>7} " + " ".join(f"{label:>16}" for _, label in cols)
    lines = [head, "-" * len(head)]
    for family, s in doc["families"].items():
        cells = []
        for key, _ in cols:
            v = s.get(key)
            mark = "" if key not in TARGETS or v is None else (" ok" if v >= TARGETS[key] else " LOW")
            cells.append(f"{'-' if v is None else f'{v:.3f}'}{mark:>4}".rjust(16))
        lines.append(f"{family:<11} {s['configs']:>7} " + " ".join(cells))
    targets = ", ".join(f"{k.replace('_', ' ')} >= {v}" for k, v in TARGETS.items())
    st = doc.get("settings", {})
    lines.append(f"targets: {targets}; ok/LOW against them. seeds {st.get('seeds')}, {st.get('frames')} frames, "
                 f"strength {st.get('strength')}")
    return "\n".join(lines)


__all__ = [
    "METHODS",
    "TARGETS",
    "ValidateConfig",
    "Validation",
    "auroc",
    "confusion",
    "count_matches",
    "format_report",
    "report",
    "roc_points",
    "run_sweep",
    "run_validation",
    "score_recording",
    "study_planted",
    "summarise",
    "sweep_configs",
    "truth_matches",
    "validation_tables",
]
