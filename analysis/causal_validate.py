"""Calibrating the causal map on planted models, next to the attention-based study (``validate --causal``).

For each planted configuration (:func:`hermes_policy.models.planted.draw_planted`, as ``validate`` draws
them) we run both instruments on the same model:

* the **study** exactly as ``validate`` does (:func:`analysis.validate.study_planted`, scored by
  :func:`analysis.validate.score_recording`): attention-based tiers by role;
* the **causal map** exactly as ``hermes-lab causal`` does (:func:`analysis.causal.map_streams`) on a
  synthetic stream with its own questions, tiers by :func:`analysis.causal_stats.causal_tiers`.

Planted models write nothing into the residual stream (their output projections are zero, so that each
head's role lives in its q/k rows alone), so no knockout can reach their answer: the answer-level map
is identically zero there (a test checks it). What the causal map can be calibrated on is the direct
effect: how much each head's output at the answer row changes when rows are removed from it
(``--effect direct``). The scores mirror validate's: layer-tier accuracy over layers with a role,
head-role accuracy over heads with a role, anchor AUROC of anchor heads against recency and diffuse heads
by the causal position concentration, recency Spearman of the causal decay against the planted one, and
whether an anchor head's most needed position is its planted one.
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

from analysis.causal import CausalConfig, map_streams
from analysis.causal_stats import CausalMap, CausalThresholds, causal_tiers, head_features
from analysis.metrics import spearman
from analysis.validate import ValidateConfig, auroc, count_matches, score_recording, study_planted, truth_matches

#: what the calibration runs of the map: one question per category, per-layer groups, 8 age bins, positions
CALIBRATION = CausalConfig(bins=8, layers="each", positions=True, answer=False, scoring="letter")
COLUMNS = (("layer_tier_accuracy", "layer acc"), ("head_role_accuracy", "head acc"),
           ("anchor_auroc", "anchor AUROC"), ("recency_spearman", "recency rho"),
           ("anchor_position_accuracy", "anchor pos"))


@dataclass
class CausalValidation:
    """Per configuration: validate's attention scores and the causal map's, side by side (rows), plus heads."""

    config: ValidateConfig
    rows: list[dict[str, Any]] = field(default_factory=list)
    heads: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def score_causal(cmap: CausalMap, truth: dict[str, Any], thresholds: CausalThresholds | None = None
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One planted model's causal map scored against its ground truth: a row and one entry per head."""
    tiers = causal_tiers(cmap, "direct", thresholds)
    layer_ok, head_ok = truth_matches(truth, tiers)
    row: dict[str, Any] = {}
    row["layer_correct"], row["layer_total"] = count_matches(layer_ok)
    row["head_correct"], row["head_total"] = count_matches([x for r in head_ok for x in r])
    feats = head_features(cmap)
    groups = cmap.meta.get("position_groups") or []
    heads, decay, planted = [], [], []
    for entry in feats.to_dict("records"):
        i, h = int(entry["layer"]), int(entry["head"])
        fav = int(entry["favoured_bin"])
        heads.append({"family": truth["family"], "seed": truth["seed"], "layer": i, "head": h,
                      "role": truth["roles"][i][h], "decay": truth["decay"][i][h],
                      "anchor_position": truth["anchor_position"][i][h], "causal_decay": float(entry["decay"]),
                      "causal_concentration": float(entry["concentration"]), "causal_effect": float(entry["effect"]),
                      "favoured_position": groups[fav][0] if 0 <= fav < len(groups) and len(groups[fav]) == 1
                      else -1, "predicted": tiers.head_tiers(len(truth["roles"][0]))[i][h]})
        if truth["decay"][i][h] > 0:
            decay.append(float(entry["decay"]))
            planted.append(truth["decay"][i][h])
    row["recency_spearman"] = spearman(torch.tensor(decay), torch.tensor(planted)) if len(decay) >= 3 else math.nan
    return row, heads


def run_causal_validation(config: ValidateConfig, causal: CausalConfig = CALIBRATION,
                          thresholds: CausalThresholds | None = None, progress: bool = True) -> CausalValidation:
    """Study and map ``config.configs`` planted models per family; hybrid families are skipped (the map
    cannot pack copies of a question through a recurrent state) and listed in ``skipped``."""
    from hermes_policy.data.dataset import synthesize
    from hermes_policy.models.planted import build_planted, draw_planted

    result = CausalValidation(config)
    jobs = [(f, config.seed + i) for f in config.families for i in range(config.configs)]
    bar = tqdm(jobs, unit="model", desc="validate --causal", file=sys.stderr, disable=not progress)
    for family, seed in bar:
        bar.set_postfix_str(f"{family} seed {seed}")
        planted = draw_planted(seed, family, strength=config.strength)
        adapter = build_planted(planted)
        if adapter.layer_types and "linear_attention" in adapter.layer_types:
            result.skipped[family] = "linear-attention layers: copies of a question cannot share a forward"
            continue
        truth = planted.ground_truth()
        started = time.perf_counter()
        rec = study_planted(adapter, config.frames, config.chunk_frames, seed)
        attention = score_recording(rec, truth, ("roles",), config.thresholds)
        attention_seconds = time.perf_counter() - started
        items = synthesize(seed, 1, config.frames, per_category=1, progress=False)
        started = time.perf_counter()
        cmap = CausalMap.from_run(map_streams(adapter, items, causal, progress=False, model=planted.name))
        row, heads = score_causal(cmap, truth, thresholds)
        attention_heads = {(h["layer"], h["head"]): h for h in attention.heads}
        for h in heads:
            mine = attention_heads[(h["layer"], h["head"])]
            h.update(concentration=mine["concentration"], measured_decay=mine["measured_decay"],
                     attention_predicted=mine["predicted"], attention_favoured=mine["favoured_position"])
        result.rows.append({"family": family, "seed": seed, "layers": len(truth["layers"]),
                            "heads": len(truth["roles"][0]), "questions": cmap.meta["questions"],
                            "attention.layer_correct": attention.row["layer_correct.roles"],
                            "attention.head_correct": attention.row["head_correct.roles"],
                            "attention.recency_spearman": attention.row["recency_spearman"],
                            "layer_total": attention.row["layer_total"], "head_total": attention.row["head_total"],
                            "causal.layer_correct": row["layer_correct"], "causal.head_correct": row["head_correct"],
                            "causal.recency_spearman": row["recency_spearman"],
                            "attention_seconds": round(attention_seconds, 3),
                            "causal_seconds": round(time.perf_counter() - started, 3)})
        result.heads += heads
    return result


def _family_scores(rows: Sequence[dict], heads: Sequence[dict], which: str) -> dict[str, float]:
    def ratio(num: str, den: str) -> float:
        d = sum(r[den] for r in rows)
        return sum(r[num] for r in rows) / d if d else math.nan

    conc = "concentration" if which == "attention" else "causal_concentration"
    fav = "attention_favoured" if which == "attention" else "favoured_position"
    scored = [h for h in heads if h["role"] in ("anchor", "recency", "diffuse")]
    rhos = [r[f"{which}.recency_spearman"] for r in rows if math.isfinite(r[f"{which}.recency_spearman"])]
    anchored = [h for h in heads if h["role"] == "anchor"]
    return {"layer_tier_accuracy": ratio(f"{which}.layer_correct", "layer_total"),
            "head_role_accuracy": ratio(f"{which}.head_correct", "head_total"),
            "anchor_auroc": auroc([h[conc] for h in scored], [h["role"] == "anchor" for h in scored]),
            "recency_spearman": sum(rhos) / len(rhos) if rhos else math.nan,
            "anchor_position_accuracy": sum(h[fav] == h["anchor_position"] for h in anchored) / len(anchored)
            if anchored else math.nan}


def report(result: CausalValidation) -> dict[str, Any]:
    """``{"families": {F: {"attention": scores, "causal": scores, configs, layers_scored}}, "skipped": ...}``."""
    from hermes_policy.jsonfile import json_safe

    out = {}
    for family in result.config.families:
        rows = [r for r in result.rows if r["family"] == family]
        if not rows:
            continue
        heads = [h for h in result.heads if h["family"] == family]
        out[family] = {"configs": len(rows), "layers_scored": sum(r["layer_total"] for r in rows),
                       "heads_scored": sum(r["head_total"] for r in rows),
                       "attention": _family_scores(rows, heads, "attention"),
                       "causal": _family_scores(rows, heads, "causal")}
    c = result.config
    return json_safe({"families": out, "skipped": result.skipped, "effect": "direct",
                      "settings": {"families": list(c.families), "configs": c.configs,
                                   "seeds": [c.seed, c.seed + c.configs - 1], "frames": c.frames,
                                   "strength": c.strength, "causal": CALIBRATION.to_dict()}})


def format_report(doc: dict[str, Any]) -> str:
    """The side-by-side table ``validate --causal`` prints: per family, attention | causal for each score."""
    head = f"{'family':<11} {'configs':>7} " + " ".join(f"{label:>21}" for _, label in COLUMNS)
    lines = [head, f"{'':<19} " + " ".join(f"{'attention | causal':>21}" for _ in COLUMNS), "-" * len(head)]
    for family, s in doc["families"].items():
        cells = []
        for key, _ in COLUMNS:
            a, b = s["attention"].get(key), s["causal"].get(key)
            def fmt(v):
                return "-" if v is None else f"{v:.3f}"

            cells.append(f"{fmt(a)} | {fmt(b)}".rjust(21))
        lines.append(f"{family:<11} {s['configs']:>7} " + " ".join(cells))
    for family, why in doc.get("skipped", {}).items():
        lines.append(f"{family:<11} skipped: {why}")
    st = doc.get("settings", {})
    lines.append(f"causal: direct effect at the answer row (planted models' answers cannot depend on the cache); "
                 f"seeds {st.get('seeds')}, {st.get('frames')} frames")
    return "\n".join(lines)


def write_causal_validation(out, result: CausalValidation) -> list:
    """``--out``: causal_rows / causal_heads parquet and ``causal_validation.json``."""
    from pathlib import Path

    import pandas as pd

    from analysis.errors import StudyError
    from hermes_policy.atomic import atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "causal_rows.parquet", out / "causal_heads.parquet", out / "causal_validation.json"]
    pd.DataFrame(result.rows).to_parquet(paths[0], index=False)
    pd.DataFrame(result.heads).to_parquet(paths[1], index=False)
    atomic_write_json(paths[2], report(result), StudyError)
    return paths


__all__ = ["CALIBRATION", "CausalValidation", "format_report", "report", "run_causal_validation",
           "score_causal", "write_causal_validation"]
