"""The study's verdict in numbers: ``summary.json`` and the per-layer table ``hermes-lab study`` prints.

Per layer and per head: the recency index (decay rate k of attention with frame age, and the mass on
the newest 10% of frames), anchor concentration and periodicity, entropy over the video (normalised
to 0..1 when the frame size is known), and the derived tier; plus whether the layers follow HERMES's
picture (recency falls and anchors rise with depth, :func:`analysis.derive.tier_checks`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from analysis.derive import TierAssignment, layer_list, measured_tiers, out_of_order, tier_checks, tier_ranges_json
from analysis.errors import StudyError
from analysis.figures import write_figures
from analysis.metrics import QuerySelector, anchor_structure, entropy_summary, has, recency_index
from hermes_policy.atomic import atomic_write_json
from probes.recording import Recording

SUMMARY_FORMAT = "hermes-lab/study-summary"
#: summary key -> (metric, its column in the printed table)
METRICS = {"decay": "k", "newest10": "newest 10%", "concentration": "anchor conc.", "periodicity": "periodicity",
           "entropy": "entropy"}
NO_ATTENTION = ("linear attention (Gated DeltaNet): a fixed-size recurrent state, no per-token attention to record "
                "and no KV cache to prune")


def _number(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def head_metrics(rec: Recording, query: QuerySelector = None) -> dict[str, torch.Tensor]:
    """Every metric of :data:`METRICS` as an (L, H) tensor (NaN where the recording cannot say)."""
    out = {**recency_index(rec, query), **anchor_structure(rec, query)}
    if has(rec, "entropy"):
        out["entropy"] = entropy_summary(rec, query)["entropy"]
    else:
        out["entropy"] = torch.full_like(out["decay"], math.nan)
    return {name: out[name].double() for name in METRICS}


def study_summary(rec: Recording, tiers: TierAssignment, query: QuerySelector = None) -> dict[str, Any]:
    """The ``summary.json`` document of a recording (a single video's or an aggregate)."""
    metrics = head_metrics(rec, query)
    checks = tier_checks(tiers)
    layers = []
    for layer in range(rec.num_layers):
        heads = [
            {"head": h, "tier": tiers.heads[layer][h] if tiers.heads else tiers.layers[layer],
             **{name: _number(values[layer, h]) for name, values in metrics.items()}}
            for h in range(rec.num_heads)
        ]
        layers.append({
            "layer": layer,
            "model_layer": rec.model_layers[layer],
            "tier": tiers.layers[layer],
            **{name: _number(values[layer].nanmean()) for name, values in metrics.items()},
            "heads": heads,
        })
    hybrid = {}
    if rec.unattended_layers:
        # say which layers the study could not see, and why, rather than leave them out silently
        hybrid = {"attention_layers": rec.model_layers, "no_attention_layers": rec.unattended_layers,
                  "no_attention_reason": NO_ATTENTION}
    return {
        "format": SUMMARY_FORMAT,
        "version": 1,
        "model": rec.meta.get("model"),
        "videos": rec.meta.get("videos") or [rec.meta.get("video")],
        "num_layers": rec.num_layers,
        **hybrid,
        "num_heads": rec.num_heads,
        "queries": rec.queries,
        "method": tiers.method,
        "tiers": tier_ranges_json(tiers),
        "tier_ranges": tiers.summary(),
        # the fewest layers whose tier breaks depth order, and layers where no head has a memory role
        "out_of_order_layers": out_of_order(tiers.layers),
        "no_role_layers": list(tiers.no_role),
        "checks": checks,
        # HERMES's picture: shallow layers favour recent frames, deep layers keep sparse periodic anchors
        "follows_hermes": bool(checks) and all(checks.values()),
        "layers": layers,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The per-layer table ``hermes-lab study`` prints, then the verdict."""
    hybrid = bool(summary.get("no_attention_layers"))
    decoder = f"{'decoder':>7} " if hybrid else ""
    head = f"{'layer':>5} {decoder}{'tier':<10} " + " ".join(f"{label:>13}" for label in METRICS.values())
    lines = [head, "-" * len(head)]
    for layer in summary["layers"]:
        cells = " ".join("            -" if layer[m] is None else f"{layer[m]:>13.3f}" for m in METRICS)
        model = f"{layer.get('model_layer', layer['layer']):>7} " if hybrid else ""
        lines.append(f"{layer['layer']:>5} {model}{layer['tier']:<10} {cells}")
    if hybrid:
        lines.append(f"no attention in decoder {layer_list(summary['no_attention_layers'])}: "
                     f"{summary['no_attention_reason']}; 'layer' counts the attention layers only")
    checks = ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in summary["checks"].items())
    verdict = "follow" if summary["follows_hermes"] else "do not follow"
    lines.append(f"tiers ({summary['method']}): {summary['tier_ranges']}; {checks}")
    if summary.get("out_of_order_layers"):
        lines.append(f"out of depth order: {layer_list(summary['out_of_order_layers'])}")
    if summary.get("no_role_layers"):
        lines.append(f"no memory role (no recency, no anchors; given the working tier): "
                     f"{layer_list(summary['no_role_layers'])}")
    lines.append(f"the layers {verdict} HERMES's shallow-recency / deep-anchor picture")
    return "\n".join(lines)


def write_study_report(rec: Recording, out: str | Path, figures: bool = True, formats: str = "pdf,png,svg,html") -> str:
    """Beside a recording in ``out``: ``summary.json`` and (unless ``figures`` is False) the study figures in
    ``out/figures/``, tiers measured (:func:`~analysis.derive.measured_tiers`); returns the per-layer table to print."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tiers = measured_tiers(rec)
    summary = study_summary(rec, tiers)
    atomic_write_json(out / "summary.json", summary, StudyError)
    if figures:
        write_figures(rec, out / "figures", formats, tiers=tiers)
    return format_summary(summary)


__all__ = ["METRICS", "SUMMARY_FORMAT", "format_summary", "head_metrics", "study_summary", "write_study_report"]
