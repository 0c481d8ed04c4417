"""The causal memory map on disk and in numbers: maps with 95% intervals, anchor necessity, correlations, tiers.

Every interval is the project's cluster bootstrap over streams (:func:`hermes_policy.eval.stats.cluster_bootstrap_ci`:
questions of one stream share its cache, so a resample draws whole streams; 2000 resamples from seed 0,
percentile 95%). A statistic that is not a mean (a correlation) is resampled the same way
(:func:`cluster_bootstrap_stat`).

Tiers from the map (:func:`causal_tiers`) use derive's role rule (:func:`analysis.derive.head_roles`)
on causal profiles instead of attention: a profile over age bins gets the study's decay fit
(:func:`analysis.metrics.decay_rate_from_mass`, each question one snapshot) and a profile over in-frame
positions the study's concentration (:func:`analysis.metrics.topk_concentration`); recency alone is
sensory, anchors alone long-term, both working. One reading attention never needs: a unit whose need
*rises* with age by at least the same e-fold (decay <= -threshold: it needs the stream's oldest frames,
as the backward questions' last layer does) is long-term too, anchors or not.
A unit (layer group for the ``answer`` effect, head for
``direct``) whose mean effect is below its floor (``min_drop``, ``min_direct``) has no role: removing any
of it changes nothing. A head's direct-effect profiles are taken relative to the null head's (one that
reads every frame patch alike, ``direct_null``): rows whose values differ from the rest (a planted anchor
position carries its own marker) move any head's output when removed, attended or not, and dividing by
the null leaves what the head's own reading adds.

Folder (``hermes-lab causal --out DIR``): ``causal.json`` (settings, summary, cost, tiers), ``effects.parquet``
(one row per question and knockout), ``heads.parquet`` (per question, layer, selection and head: attention
mass and direct effect), ``figures/``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from analysis.derive import CAUSAL_METHOD, TIERS, TierAssignment, head_roles, layer_role
from analysis.errors import StudyError
from analysis.metrics import decay_rate_from_mass, spearman, topk_concentration
from hermes_policy.eval.stats import BOOTSTRAP, LEVEL, N_RESAMPLES, SEED, cluster_bootstrap_ci
from hermes_policy.jsonfile import json_safe, read_json

FORMAT = "hermes-lab/causal-map"
VERSION = 1
META_FILE = "causal.json"
EFFECTS = ("answer", "direct")
KEY = ["stream", "question_index"]


@dataclass(frozen=True)
class CausalThresholds:
    """Where a causal profile starts to count as recency or anchors (:func:`causal_tiers`).

    Attributes:
        decay, concentration: derive's role thresholds (:class:`analysis.derive.RoleThresholds`), on the
            causal profiles.
        min_drop: least mean answer drop (nats of the correct option's log-probability) for a layer group to
            have a role at all.
        min_direct: least mean direct effect (relative change of the head's output) for a head to have one.
    """

    decay: float = 1.0
    concentration: float = 0.2
    min_drop: float = 0.01
    min_direct: float = 0.0

    def __post_init__(self) -> None:
        for name in ("decay", "concentration", "min_drop", "min_direct"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise StudyError(f"the {name} threshold must be a finite number >= 0, got {value!r}")


@dataclass
class CausalMap:
    """A causal map's tables and metadata (see :class:`analysis.causal.CausalRun` for the columns)."""

    effects: pd.DataFrame
    heads: pd.DataFrame
    meta: dict[str, Any]

    @classmethod
    def from_run(cls, run) -> CausalMap:
        meta = {**run.meta, "cost": run.report.to_dict()}
        return cls(pd.DataFrame(run.effects), pd.DataFrame(run.heads), meta)

    @property
    def num_layers(self) -> int:
        return int(self.meta["num_layers"])

    @property
    def groups(self) -> list[list[int]]:
        return [list(g) for g in self.meta["groups"]]

    def group_of(self, layer: int) -> int | None:
        return next((g for g, layers in enumerate(self.groups) if layer in layers), None)

    def save(self, directory: str | Path, thresholds: CausalThresholds | None = None) -> list[Path]:
        """``causal.json``, ``effects.parquet`` and ``heads.parquet`` in ``directory``; returns the paths."""
        from hermes_policy.atomic import atomic_write_json

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "effects.parquet", out / "heads.parquet"]
        self.effects.to_parquet(paths[0], index=False)
        self.heads.to_parquet(paths[1], index=False)
        doc = {"format": FORMAT, "version": VERSION, **self.meta, "summary": summary(self, thresholds)}
        atomic_write_json(out / META_FILE, json_safe(doc), StudyError)
        return [*paths, out / META_FILE]

    @classmethod
    def load(cls, directory: str | Path) -> CausalMap:
        """The map ``hermes-lab causal`` wrote into ``directory`` (one clear :class:`StudyError` otherwise)."""
        d = Path(directory)
        if not d.is_dir():
            raise StudyError(f"--causal takes the folder `hermes-lab causal --out` wrote; {d} is not a folder")
        path = d / META_FILE
        if not path.is_file():
            raise StudyError(f"{d} holds no causal map (no {META_FILE}); run `hermes-lab causal --out {d}` first")
        meta = read_json(path, StudyError, "causal map")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise StudyError(f"{path} is not a hermes-lab causal map")
        if meta.get("version") != VERSION:
            raise StudyError(f"{path} has version {meta.get('version')!r}; this build reads {VERSION}")
        for key in ("num_layers", "num_heads", "groups", "settings"):
            if key not in meta:
                raise StudyError(f"{path} lacks {key!r}")
        try:
            effects, heads = pd.read_parquet(d / "effects.parquet"), pd.read_parquet(d / "heads.parquet")
        except Exception as e:  # noqa: BLE001  (pyarrow raises its own types for a missing or corrupt file)
            raise StudyError(f"{d}: the map's tables cannot be read ({e})") from None
        for name, df, cols in (("effects", effects, ["stream", "question_index", "kind", "group", "bin", "drop"]),
                               ("heads", heads, ["stream", "question_index", "layer", "kind", "bin", "head",
                                                 "attention", "direct"])):
            missing = [c for c in cols if c not in df.columns]
            if missing:
                raise StudyError(f"{d}/{name}.parquet lacks columns {missing}")
        meta = {k: v for k, v in meta.items() if k not in ("format", "version", "summary")}
        return cls(effects, heads, meta)


# --------------------------------------------------------------------------- intervals
def _ci(values, clusters) -> tuple[float, float]:
    ci = cluster_bootstrap_ci(values, clusters)
    return (math.nan, math.nan) if ci is None else (ci[0], ci[1])


def cluster_bootstrap_stat(stat: Callable[[np.ndarray], float], n: int, clusters, *, resamples: int = N_RESAMPLES,
                           seed: int = SEED, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of ``stat(rows)`` when whole clusters are resampled (as :func:`cluster_bootstrap_ci`
    does for a mean); ``stat`` gets an index array into the n rows. NaN resamples are dropped."""
    if n == 0:
        return math.nan, math.nan
    _, cluster = np.unique(np.asarray(clusters), return_inverse=True)
    members = [np.flatnonzero(cluster == c) for c in range(cluster.max() + 1)]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(members), size=(resamples, len(members)))
    values = np.array([stat(np.concatenate([members[c] for c in row])) for row in draws], dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- maps
def necessity_map(cmap: CausalMap, kind: str = "age") -> pd.DataFrame:
    """Per (layer group, bin) of one knockout kind (``age`` or ``position``): mean drop of the correct option's
    log-probability and flip rate over questions, each with its 95% interval, and the question count."""
    e = cmap.effects[cmap.effects["kind"] == kind]
    rows = []
    for (g, b), d in e.groupby(["group", "bin"], sort=True):
        layers = cmap.groups[int(g)]
        drop_lo, drop_hi = _ci(d["drop"], d["stream"])
        flip_lo, flip_hi = _ci(d["flip"].astype(float), d["stream"])
        rows.append({"group": int(g), "layers": f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0]),
                     "layer_first": layers[0], "layer_last": layers[-1], "bin": int(b), "n": len(d),
                     "drop": float(d["drop"].mean()), "drop_lo": drop_lo, "drop_hi": drop_hi,
                     "flip": float(d["flip"].mean()), "flip_lo": flip_lo, "flip_hi": flip_hi})
    return pd.DataFrame(rows, columns=["group", "layers", "layer_first", "layer_last", "bin", "n", "drop",
                                       "drop_lo", "drop_hi", "flip", "flip_lo", "flip_hi"])


def _head_means(cmap: CausalMap, kind: str) -> pd.DataFrame:
    """Per question, layer and bin of one kind: the head-mean attention mass and direct effect."""
    h = cmap.heads[cmap.heads["kind"] == kind]
    return h.groupby([*KEY, "layer", "bin"], as_index=False)[["attention", "direct"]].mean()


def direct_map(cmap: CausalMap, kind: str = "age") -> pd.DataFrame:
    """Per (layer, bin): mean over questions of the head-mean direct effect and attention mass, with intervals."""
    rows = []
    for (layer, b), d in _head_means(cmap, kind).groupby(["layer", "bin"], sort=True):
        lo, hi = _ci(d["direct"], d["stream"])
        rows.append({"layer": int(layer), "bin": int(b), "n": len(d), "direct": float(d["direct"].mean()),
                     "direct_lo": lo, "direct_hi": hi, "attention": float(d["attention"].mean())})
    return pd.DataFrame(rows, columns=["layer", "bin", "n", "direct", "direct_lo", "direct_hi", "attention"])


def anchor_necessity(cmap: CausalMap) -> pd.DataFrame:
    """Per anchor head of the map: the drop when its favoured position is hidden from it alone, the same for a
    control position, their paired difference with its interval, and the direct effects of both positions."""
    e = cmap.effects
    a, c = e[e["kind"] == "anchor"], e[e["kind"] == "control"]
    if a.empty:
        return pd.DataFrame(columns=["layer", "head", "position", "control_position", "n", "drop_anchor",
                                     "drop_control", "difference", "difference_lo", "difference_hi",
                                     "direct_anchor", "direct_control"])
    groups = cmap.meta.get("position_groups") or []
    pos_bin = {p: b for b, ps in enumerate(groups) for p in ps}
    h = cmap.heads[cmap.heads["kind"] == "position"]
    rows = []
    for (layer, head), d in a.groupby(["layer_first", "head"], sort=True):
        pair = d.merge(c[(c["layer_first"] == layer) & (c["head"] == head)], on=KEY, suffixes=("", "_c"))
        diff = pair["drop"] - pair["drop_c"]
        lo, hi = _ci(diff, pair["stream"])
        pos, ctrl = int(d["position"].iloc[0]), int(pair["position_c"].iloc[0]) if len(pair) else -1
        mine = h[(h["layer"] == layer) & (h["head"] == head)]
        direct = {k: float(mine[mine["bin"] == pos_bin.get(p, -1)]["direct"].mean()) if p in pos_bin else math.nan
                  for k, p in (("anchor", pos), ("control", ctrl))}
        rows.append({"layer": int(layer), "head": int(head), "position": pos, "control_position": ctrl,
                     "n": len(pair), "drop_anchor": float(pair["drop"].mean()),
                     "drop_control": float(pair["drop_c"].mean()), "difference": float(diff.mean()),
                     "difference_lo": lo, "difference_hi": hi, "direct_anchor": direct["anchor"],
                     "direct_control": direct["control"]})
    return pd.DataFrame(rows)


def scatter_data(cmap: CausalMap, tiers: TierAssignment) -> pd.DataFrame:
    """One point per (question, layer, age bin): the answer row's attention mass there (head mean) against
    the causal effects (answer drop of the layer's group; direct effect), with the layer's tier."""
    h = _head_means(cmap, "age")
    e = cmap.effects[cmap.effects["kind"] == "age"][[*KEY, "group", "bin", "drop"]]
    h = h.assign(group=[cmap.group_of(int(x)) for x in h["layer"]])
    merged = h.merge(e, on=[*KEY, "group", "bin"], how="left")
    merged["tier"] = [tiers.layers[int(x)] for x in merged["layer"]]
    return merged[[*KEY, "layer", "tier", "bin", "attention", "direct", "drop"]]


def correlations(cmap: CausalMap, tiers: TierAssignment | None = None) -> pd.DataFrame:
    """Per layer: Spearman rho between the attention mass on an age bin and the causal effect of removing it,
    over (question, bin) pairs, for the answer drop and for the direct effect, each with its 95% interval."""
    from analysis.derive import hermes_fixed_tiers

    data = scatter_data(cmap, tiers or hermes_fixed_tiers(cmap.num_layers))
    rows = []
    for layer, d in data.groupby("layer", sort=True):
        row: dict[str, Any] = {"layer": int(layer), "tier": d["tier"].iloc[0], "n": len(d)}
        x = d["attention"].to_numpy(np.float64)
        for name in ("drop", "direct"):
            y = d[name].to_numpy(np.float64)
            row[f"rho_{name}"] = spearman(torch.tensor(x), torch.tensor(y))  # the project's rho
            row[f"rho_{name}_lo"], row[f"rho_{name}_hi"] = cluster_bootstrap_stat(
                lambda i, x=x, y=y: _spearman(x[i], y[i]), len(d), d["stream"].to_numpy())
        rows.append(row)
    return pd.DataFrame(rows)


def _average_ranks(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="stable")
    _, inverse, counts = np.unique(a[order], return_inverse=True, return_counts=True)
    ranks = np.empty(len(a))
    ranks[order] = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    return ranks


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """:func:`analysis.metrics.spearman` in numpy (the same ties, NaN and constant rules), for resampling."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return math.nan
    rx, ry = _average_ranks(x[ok]), _average_ranks(y[ok])
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return 0.0 if den == 0 else float((rx * ry).sum() / den)


# --------------------------------------------------------------------------- tiers
def _cube(df: pd.DataFrame, unit: str, size: tuple[int, int], value: str) -> torch.Tensor:
    """(questions, units, bins) float64 of ``value``, NaN where a question has no row for a unit and bin."""
    questions = df.groupby(KEY, sort=True).ngroup().to_numpy()
    out = torch.full((int(questions.max()) + 1 if len(df) else 0, *size), math.nan, dtype=torch.float64)
    index = [torch.from_numpy(np.array(x, dtype=np.int64)) for x in (questions, df[unit], df["bin"])]
    out[index[0], index[1], index[2]] = torch.from_numpy(np.array(df[value], dtype=np.float64))
    return out


def profile_features(age: torch.Tensor, positions: torch.Tensor | None,
                     effect: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Role features of causal profiles: ``decay`` (study's fit, one snapshot per question), ``concentration``
    (of the mean position profile) and ``effect`` (mean effect over questions and age bins), per unit.

    Args:
        age: (T, U, B) effect of removing age bin b (bin 0 the newest), per question and unit; NaN missing.
        positions: (T, U, P) effect of removing in-frame position (group) p, or None.
        effect: (T, U, B) what ``effect`` averages, when not ``age`` itself (the raw effect of a ratio profile).
    """
    T, U, B = age.shape
    pos = age.clamp(min=0)
    mean_effect = (pos if effect is None else effect.clamp(min=0)).nanmean(dim=(0, 2))
    total = pos.nansum(-1, keepdim=True)
    share = torch.where(total > 0, pos / total, torch.full_like(pos, math.nan))  # a snapshot without effect: none
    # the study's fit takes frames oldest first: slot f holds bin B-1-f; its d = b/(B-1) stretches the bins'
    # centres (b + 0.5)/B, so the slope is scaled back to normalised age
    mass = share.flip(-1).permute(1, 0, 2)[:, :, None, None, :]  # (U, T, 1, 1, B) as (L, T, Q, H, F)
    decay = decay_rate_from_mass(mass, torch.full((T,), B, dtype=torch.long))[:, 0] * (B - 1) / B if B > 1 \
        else torch.full((U,), math.nan, dtype=torch.float64)
    conc = torch.full((U,), math.nan, dtype=torch.float64)
    if positions is not None and positions.numel():
        conc = topk_concentration(positions.clamp(min=0).nanmean(dim=0))
    return {"decay": decay, "concentration": conc, "effect": mean_effect}


def _head_profiles(cmap: CausalMap) -> dict[str, torch.Tensor]:
    """Direct-effect features of every head (unit = layer·H + head), profiles relative to the null head's."""
    L, H, B = cmap.num_layers, int(cmap.meta["num_heads"]), int(cmap.meta["settings"]["bins"])
    P = len(cmap.meta.get("position_groups") or [])
    h = cmap.heads.assign(unit=cmap.heads["layer"] * H + cmap.heads["head"])
    if "direct_null" in h:
        h = h.assign(ratio=h["direct"] / h["direct_null"].where(h["direct_null"] > 0))
    else:  # a map from before the null was recorded: the raw effect
        h = h.assign(ratio=h["direct"])
    ha, hp = h[h["kind"] == "age"], h[h["kind"] == "position"]
    age = _cube(ha, "unit", (L * H, B), "ratio")
    pos = _cube(hp, "unit", (L * H, P), "ratio") if len(hp) and P else None
    out = profile_features(age, pos, _cube(ha, "unit", (L * H, B), "direct"))
    out["favoured"] = pos.nanmean(0).nan_to_num(-1.0).argmax(-1) if pos is not None else torch.full((L * H,), -1)
    return out


def causal_tiers(cmap: CausalMap, effect: str = "answer", thresholds: CausalThresholds | None = None
                 ) -> TierAssignment:
    """Tiers from the map: ``answer`` (each layer group by its answer-drop profiles; every layer of a group
    takes its tier) or ``direct`` (each head by its direct-effect profiles, a layer by its heads' majority)."""
    if effect not in EFFECTS:
        raise StudyError(f"--effect must be one of {', '.join(EFFECTS)}, got {effect!r}")
    t = thresholds or CausalThresholds()
    L, H, B = cmap.num_layers, int(cmap.meta["num_heads"]), int(cmap.meta["settings"]["bins"])
    P = len(cmap.meta.get("position_groups") or [])
    if effect == "answer":
        e = cmap.effects
        if e.empty or not (e["kind"] == "age").any():
            raise StudyError("the map has no answer-level knockouts (it was made with --no-answer); derive with "
                             "--effect direct")
        G = len(cmap.groups)
        age = _cube(e[e["kind"] == "age"], "group", (G, B), "drop")
        pe = e[e["kind"] == "position"]
        feats = profile_features(age, _cube(pe, "group", (G, P), "drop") if len(pe) and P else None)
        per_group = _roles(feats, t, t.min_drop)
        layers, no_role = ["working"] * L, []
        for g, members in enumerate(cmap.groups):
            for i in members:
                layers[i] = per_group[g] or "working"
                if per_group[g] is None:
                    no_role.append(i)
        features = {k: tuple(float(v[cmap.group_of(i)]) if cmap.group_of(i) is not None else math.nan
                             for i in range(L)) for k, v in feats.items()}
        return TierAssignment(tuple(layers), None, CAUSAL_METHOD, features, None, tuple(sorted(no_role)))
    feats = _head_profiles(cmap)
    roles = _roles(feats, t, t.min_direct)
    head_rows = [roles[i * H:(i + 1) * H] for i in range(L)]
    lr = [layer_role(r) for r in head_rows]
    tiers = tuple(x or "working" for x in lr)
    heads = tuple(tuple(x or tiers[i] for x in row) for i, row in enumerate(head_rows))
    features = {k: tuple(float(torch.nanmean(feats[k].reshape(L, H)[i].double())) for i in range(L))
                for k in ("decay", "concentration", "effect")}
    return TierAssignment(tiers, heads, CAUSAL_METHOD, features, None, tuple(i for i, x in enumerate(lr) if x is None))


def _roles(feats: dict[str, torch.Tensor], t: CausalThresholds, floor: float) -> list[str | None]:
    """derive's role per unit (long-term, too, where need rises with age), None below ``floor``."""
    roles = head_roles(feats["decay"][None], feats["concentration"][None], t.decay, t.concentration)[0]
    past = (feats["decay"] <= -t.decay).tolist()  # needs the oldest frames most: long-term memory
    roles = ["long-term" if p and r is None else r for r, p in zip(roles, past)]
    return [None if not (float(e) >= floor) else r for r, e in zip(roles, feats["effect"])]


def head_features(cmap: CausalMap) -> pd.DataFrame:
    """Per head: the direct-effect role features (decay, concentration, effect) and its favoured position group."""
    L, H = cmap.num_layers, int(cmap.meta["num_heads"])
    feats = _head_profiles(cmap)
    return pd.DataFrame({"layer": np.repeat(np.arange(L), H), "head": np.tile(np.arange(H), L),
                         **{k: feats[k].numpy() for k in ("decay", "concentration", "effect")},
                         "favoured_bin": feats["favoured"].numpy()})


def causal_spec(cmap: CausalMap, effect: str = "answer", thresholds: CausalThresholds | None = None,
                budget: int | None = None, budget_weights=None):
    """The ``hermes`` PolicySpec whose tiers come from the map (``derive --causal DIR``)."""
    from analysis.derive import format_ranges, out_of_order, policy_spec, tier_ranges_json

    t = thresholds or CausalThresholds()
    tiers = causal_tiers(cmap, effect, t)
    source: dict[str, Any] = {
        "method": "causal", "tier_method": CAUSAL_METHOD, "effect": effect, "model": cmap.meta.get("model"),
        "streams": len(cmap.meta.get("streams") or []), "questions": cmap.meta.get("questions"),
        "mode": cmap.meta["settings"].get("mode"), "tiers": tier_ranges_json(tiers),
        "summary": format_ranges(tiers.runs()),
        "no_role_layers": list(tiers.no_role),
        "thresholds": {"decay": t.decay, "concentration": t.concentration, "min_drop": t.min_drop,
                       "min_direct": t.min_direct},
        "feature_values": {k: [round(v, 6) for v in vals] for k, vals in tiers.features.items()}}
    if not tiers.in_depth_order:
        source["out_of_order_layers"] = out_of_order(tiers.layers)
    family = str(cmap.meta.get("family") or "unknown")
    return policy_spec(tiers, family, "causal", json_safe(source), budget_weights, budget,
                       cmap.meta.get("model_layers"))


def summary(cmap: CausalMap, thresholds: CausalThresholds | None = None) -> dict[str, Any]:
    """What ``causal.json`` says about the map: maps, anchors, correlations, tiers by both effects."""
    from analysis.derive import format_ranges, hermes_fixed_tiers, tier_ranges_json

    out: dict[str, Any] = {"bootstrap": BOOTSTRAP, "tiers": {}}
    for effect in EFFECTS:
        try:
            t = causal_tiers(cmap, effect, thresholds)
        except StudyError as e:
            out["tiers"][effect] = {"error": str(e)}
            continue
        out["tiers"][effect] = {"layers": list(t.layers), "ranges": tier_ranges_json(t), "summary":
                                format_ranges(t.runs()), "no_role_layers": list(t.no_role),
                                "features": {k: list(v) for k, v in t.features.items()}}
    if not cmap.effects.empty:
        out["age_map"] = necessity_map(cmap, "age").to_dict("records")
        out["position_map"] = necessity_map(cmap, "position").to_dict("records")
        out["anchors"] = anchor_necessity(cmap).to_dict("records")
        out["correlation"] = correlations(cmap, hermes_fixed_tiers(cmap.num_layers)).to_dict("records")
    out["direct_age_map"] = direct_map(cmap, "age").to_dict("records")
    return out


__all__ = ["EFFECTS", "FORMAT", "TIERS", "CausalMap", "CausalThresholds", "anchor_necessity", "causal_spec",
           "causal_tiers",
           "cluster_bootstrap_stat", "correlations", "direct_map", "head_features", "necessity_map",
           "profile_features", "scatter_data", "summary"]
