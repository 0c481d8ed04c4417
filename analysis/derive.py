"""Memory tiers from measurements, and the HERMES policy spec they imply.

Three ways to give a model's layers sensory / working / long-term tiers:

* ``measured`` (method ``roles``, the default): each layer by what its heads
  measurably do. A head has *recency* when its fitted decay k (attention ∝
  exp(-k·d) over normalised frame age d) is at least 1, and *anchors* when its
  in-frame position concentration is at least 0.2; both scales read 0 for
  uniform attention. Recency alone is sensory, anchors alone long-term, both
  working. A layer takes its heads' majority role, whatever its depth; a layer
  where no head has a role is reported (``no_role``) and takes the working tier.
  Tiers that break depth order are reported (``tiers_follow_depth`` false, and
  the fewest layers out of order), not forced into shape.
* ``changepoint``: three contiguous depth segments. Each layer gets a feature
  vector (recency: ``newest10`` and the decay rate; anchors: position
  ``concentration`` and ``periodicity``), standardised across layers; we search
  every pair of change points ``0 < a < b < L`` (O(L²) with prefix sums) for the
  split with the least within-segment squared error. Heads are then assigned to
  the tier whose centroid (mean standardised feature vector of its layers) is
  nearest to the head's own features.
* ``hermes-fixed``: HERMES's released split by relative depth (sensory
  ``i < 0.1·L``, long-term ``i >= 0.7·L``, working the rest).

Why ``roles`` is the default: on planted models with known tiers
(``hermes-lab validate``, :mod:`analysis.validate`) change points recover 58-76% of
layer tiers and the fixed split 42-64%, while roles recover 97-99%. Change
points are forced into depth order, and their least-squares cost prefers to cut
a long sensory block in two (strong vs weak recency) over isolating a short
working or long-term block; thresholds on null-referenced scales have neither
bias.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from analysis.errors import StudyError
from analysis.metrics import QuerySelector, anchor_structure, recency_index
from hermes_policy.jsonfile import json_safe
from hermes_policy.policies.spec import PolicySpec
from probes.recording import Recording

TIERS: tuple[str, str, str] = ("sensory", "working", "long-term")
#: cross-layer smoothing weight per tier, as released by HERMES
GAMMA: dict[str, float] = {"sensory": 0.1, "working": 0.3, "long-term": 0.4}
FEATURES: tuple[str, ...] = ("newest10", "decay", "concentration", "periodicity")
SENSORY_K = 20.0
ROLE_METHOD = "roles"
#: tiers from the causal memory map (:mod:`analysis.causal_stats`): by measured roles too, so in any depth order
CAUSAL_METHOD = "causal"
#: a head has recency when its fitted decay k (``mass ∝ exp(-k·d)``, d = normalised age) is at least
#: this: the newest frame gets e times the oldest one's mass, an e-fold over the stream
ROLE_DECAY = 1.0
#: a head has anchors when its position concentration is at least this: on 16 positions per frame,
#: the two heaviest hold 30% of the mass (uniform: 12.5%)
ROLE_CONCENTRATION = 0.2


@dataclass(frozen=True)
class TierAssignment:
    """Tiers per layer (and optionally per head).

    Attributes:
        layers: tier name per decoder layer, ordered by depth (length L).
        heads: per layer, the tier of each query head (L × H), or None.
        method: how the split was made ("roles", "changepoint", "hermes-fixed" or "causal"); only "roles"
            and "causal" may give tiers out of depth order.
        no_role: layers where no head showed recency or anchors (``roles`` only; they take the working tier).
        features: per-layer raw feature values used for the split (name -> L floats; empty if none).
        cost: within-segment squared error of the chosen split (changepoint only).
    """

    layers: tuple[str, ...]
    heads: tuple[tuple[str, ...], ...] | None = None
    method: str = "hermes-fixed"
    features: dict[str, tuple[float, ...]] = field(default_factory=dict)
    cost: float | None = None
    no_role: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if any(t not in TIERS for t in self.layers):
            raise ValueError(f"tiers must be among {TIERS}")
        if self.method not in (ROLE_METHOD, CAUSAL_METHOD) and not self.in_depth_order:
            raise ValueError("tiers must be contiguous and ordered by depth: sensory, working, long-term")

    @property
    def in_depth_order(self) -> bool:
        """Whether the tiers follow depth (sensory, then working, then long-term), as HERMES pictures them."""
        order = [TIERS.index(t) for t in self.layers]
        return order == sorted(order)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def boundaries(self) -> tuple[int, int]:
        """(first working layer, first long-term layer); equal to L where a tier is absent at the end."""
        a = sum(t == "sensory" for t in self.layers)
        return a, a + sum(t == "working" for t in self.layers)

    def layers_in(self, tier: str) -> list[int]:
        return [i for i, t in enumerate(self.layers) if t == tier]

    def ranges(self) -> dict[str, tuple[int, int] | None]:
        """Tier -> (first, last) layer, inclusive; None for an empty tier (see :meth:`runs` for tiers out of order)."""
        out: dict[str, tuple[int, int] | None] = {}
        for tier in TIERS:
            idx = self.layers_in(tier)
            out[tier] = (idx[0], idx[-1]) if idx else None
        return out

    def runs(self) -> dict[str, list[tuple[int, int]] | None]:
        """Tier -> its runs of consecutive layers, [(first, last), ...]; None for an empty tier."""
        out: dict[str, list[tuple[int, int]] | None] = {}
        for tier in TIERS:
            runs: list[tuple[int, int]] = []
            for i in self.layers_in(tier):
                if runs and runs[-1][1] == i - 1:
                    runs[-1] = (runs[-1][0], i)
                else:
                    runs.append((i, i))
            out[tier] = runs or None
        return out

    def summary(self) -> str:
        """One line, e.g. ``sensory 0-2 | working 3-19 | long-term 20-27`` (``sensory 0-2,5`` out of order)."""
        return format_ranges(self.runs())

    def head_tiers(self, num_heads: int) -> list[list[str]]:
        """Per-head tiers; where none were measured every head takes its layer's tier."""
        if self.heads is not None:
            return [list(h) for h in self.heads]
        return [[t] * num_heads for t in self.layers]


def format_ranges(ranges: Mapping[str, Any]) -> str:
    """``{"sensory": (0, 2), ...}`` -> ``sensory 0-2 | working 3-19 | long-term 20-27`` (a one-layer tier: ``5``).

    A tier may also be a list of runs, ``[(0, 2), (5, 5)]`` -> ``0-2,5`` (tiers out of depth order).
    """
    def run(r: Sequence[int]) -> str:
        return f"{r[0]}" if r[0] == r[1] else f"{r[0]}-{r[1]}"

    def one(r: Any) -> str:
        if not r:
            return "none"
        return ",".join(run(x) for x in r) if isinstance(r[0], (list, tuple)) else run(r)

    return " | ".join(f"{tier} {one(r)}" for tier, r in ranges.items())


# --------------------------------------------------------------------------- fixed split
def hermes_fixed_tiers(num_layers: int) -> TierAssignment:
    """HERMES's released split: layer i is sensory if i < 0.1·L, long-term if i >= 0.7·L, else working.

    Compared in integers (10·i < L, 10·i >= 7·L) so that float rounding of 0.1·L
    or 0.7·L can never move a boundary. L = 28: sensory 0-2, working 3-19,
    long-term 20-27. L = 30: sensory 0-2, working 3-20, long-term 21-29.
    """
    if num_layers < 1:
        raise StudyError(f"a model needs at least one layer to split into tiers, got {num_layers}")
    tiers = tuple("sensory" if 10 * i < num_layers else "long-term" if 10 * i >= 7 * num_layers else "working"
                  for i in range(num_layers))
    return TierAssignment(tiers, method="hermes-fixed")


# --------------------------------------------------------------------------- change points
def standardise(x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
    """Z-score each feature (last axis) with the mean/std of ``ref`` (L, D) over its first axis.

    A feature that is constant across layers carries no split information and
    becomes 0 (not NaN); NaN entries become 0 (the mean) too.
    """
    ref = x if ref is None else ref
    mean = ref.nanmean(dim=0)
    std = torch.sqrt(((ref - mean) ** 2).nanmean(dim=0))
    z = (x - mean) / torch.where(std > 0, std, torch.ones_like(std))
    z = torch.where(std > 0, z, torch.zeros_like(z))
    return torch.nan_to_num(z, nan=0.0)


def segment_costs(x: torch.Tensor) -> torch.Tensor:
    """(L+1, L+1) cost[i, j] = squared error of rows i..j-1 of ``x`` (L, D) around their mean; inf for j <= i."""
    x = x.to(torch.float64)
    L = x.shape[0]
    s1 = torch.cat([torch.zeros(1, x.shape[1], dtype=x.dtype), x.cumsum(0)])  # (L+1, D)
    s2 = torch.cat([torch.zeros(1, dtype=x.dtype), (x * x).sum(1).cumsum(0)])  # (L+1,)
    i, j = torch.meshgrid(torch.arange(L + 1), torch.arange(L + 1), indexing="ij")
    n = (j - i).to(x.dtype)
    diff = s1[None, :, :] - s1[:, None, :]  # sum over rows i..j-1
    cost = s2[None, :] - s2[:, None] - (diff * diff).sum(-1) / n.clamp(min=1)
    return torch.where(j > i, cost.clamp(min=0), torch.full_like(cost, math.inf))


def best_two_changepoints(x: torch.Tensor) -> tuple[int, int, float]:
    """Exhaustive search for 0 < a < b < L minimising the summed within-segment squared error.

    Args:
        x: (L, D) one (standardised) feature vector per layer, L >= 3.

    Returns:
        (a, b, cost): segments are rows [0, a), [a, b), [b, L). Ties go to the
        smallest (a, b) in lexicographic order, so the result is deterministic.
    """
    L = x.shape[0]
    if L < 3:
        raise StudyError(f"three tiers need at least 3 layers, the recording has {L}")
    c = segment_costs(x)
    a = torch.arange(L + 1)
    total = c[0, :, None] + c + c[:, L][None, :]  # total[a, b] = c[0,a] + c[a,b] + c[b,L]
    ok = (a[:, None] >= 1) & (a[:, None] < a[None, :]) & (a[None, :] <= L - 1)
    total = torch.where(ok, total, torch.full_like(total, math.inf))
    flat = int(torch.argmin(total))
    return flat // (L + 1), flat % (L + 1), float(total.flatten()[flat])


# --------------------------------------------------------------------------- measured split
def tier_features(rec: Recording, query: QuerySelector = None) -> tuple[list[str], torch.Tensor]:
    """Per-head features for the split: (names, (L, H, D) raw values).

    Features: ``newest10`` and ``decay`` (recency, :func:`recency_index`),
    ``concentration`` and ``periodicity`` (anchors, :func:`anchor_structure`).
    A feature the recording cannot provide (all NaN) is left out.
    """
    values = {**recency_index(rec, query), **anchor_structure(rec, query)}
    names = [n for n in FEATURES if not torch.isnan(values[n]).all()]
    if not names:
        raise StudyError("the recording has no usable attention features (every frame mass is missing)")
    return names, torch.stack([values[n] for n in names], dim=-1)


def assign_heads(head_z: torch.Tensor, layer_z: torch.Tensor, layers: Sequence[str]) -> list[list[str]]:
    """Nearest tier centroid per head.

    Args:
        head_z: (L, H, D) standardised head features.
        layer_z: (L, D) standardised layer features.
        layers: tier per layer (defines the centroids; empty tiers are not candidates).
    """
    present = [t for t in TIERS if t in layers]
    centroids = torch.stack([layer_z[[i for i, t in enumerate(layers) if t == tier]].mean(0) for tier in present])
    dist = ((head_z[:, :, None, :] - centroids[None, None]) ** 2).sum(-1)  # (L, H, tiers)
    return [[present[int(j)] for j in row] for row in dist.argmin(-1)]


@dataclass(frozen=True)
class RoleThresholds:
    """Where a head starts to count as having recency or anchors (method ``roles``).

    Attributes:
        decay: least fitted decay k for recency (default 1: one e-fold over the stream).
        concentration: least position concentration for anchors (default 0.2).

    The defaults were fixed before any calibration and are not tuned; ``hermes-lab validate``
    shows how the verdict moves with them (README, "How far to trust a study").
    """

    decay: float = ROLE_DECAY
    concentration: float = ROLE_CONCENTRATION

    def __post_init__(self) -> None:
        for name in ("decay", "concentration"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise StudyError(f"the {name} threshold must be a finite number >= 0, got {value!r}")


def head_roles(decay: torch.Tensor, concentration: torch.Tensor, min_decay: float = ROLE_DECAY,
               min_concentration: float = ROLE_CONCENTRATION) -> list[list[str | None]]:
    """Each head's memory role from its own measurements: (L, H) decay k and concentration -> tier or None.

    Recency alone is sensory, anchors alone long-term, both working, neither None (no memory role).
    A NaN measurement counts as absent.
    """
    recency = (decay >= min_decay).tolist()
    anchors = (concentration >= min_concentration).tolist()
    table = {(True, False): "sensory", (True, True): "working", (False, True): "long-term", (False, False): None}
    return [[table[(r, a)] for r, a in zip(rr, aa)] for rr, aa in zip(recency, anchors)]


def layer_role(heads: Sequence[str | None]) -> str | None:
    """A layer's tier from its heads' roles: the most common role; a tie, or a split between sensory and
    long-term heads, is working (the layer mixes both); None when no head has a role."""
    counts = {t: sum(h == t for h in heads) for t in TIERS}
    top = max(counts.values())
    if top == 0:
        return None
    leaders = [t for t in TIERS if counts[t] == top]
    return leaders[0] if len(leaders) == 1 else "working"


def role_tiers(rec: Recording, query: QuerySelector = None, thresholds: RoleThresholds | None = None) -> TierAssignment:
    """Tiers by measured role (method ``roles``), layer by layer, in whatever order depth gives them.

    Each head is classified on two absolute, null-referenced scales (:func:`head_roles`): recency
    (decay k >= ``thresholds.decay``) and anchors (concentration >= ``thresholds.concentration``);
    uniform attention scores 0 on both. A layer takes its heads' majority role (:func:`layer_role`).
    A layer where no head has a role takes the working tier, which blends recency and attention, and is listed in
    ``no_role``: it is reported, not absorbed into its neighbours' tier.
    """
    rec_idx, anchors = recency_index(rec, query), anchor_structure(rec, query)
    if torch.isnan(rec_idx["decay"]).all():
        raise StudyError("the recording has no usable attention features (every frame mass is missing)")
    if torch.isnan(anchors["concentration"]).all():
        raise StudyError("tiers by role need the in-frame position mass, which this recording lacks; re-run the "
                         "probe with position_mass captured, or derive with --method changepoint")
    thresholds = thresholds or RoleThresholds()
    roles = head_roles(rec_idx["decay"], anchors["concentration"], thresholds.decay, thresholds.concentration)
    layers = [layer_role(r) for r in roles]
    tiers = tuple(t or "working" for t in layers)
    heads = tuple(tuple(h or tiers[i] for h in row) for i, row in enumerate(roles))
    values = {"newest10": rec_idx["newest10"], "decay": rec_idx["decay"], **anchors}
    features = {n: tuple(float(v) for v in values[n].nanmean(dim=1)) for n in FEATURES
                if not torch.isnan(values[n]).all()}
    no_role = tuple(i for i, t in enumerate(layers) if t is None)
    return TierAssignment(tiers, heads, ROLE_METHOD, features, None, no_role)


def measured_method(rec: Recording) -> str:
    """The measured tier method a recording supports: ``roles``, or ``changepoint`` when it lacks the
    in-frame position mass that roles need (a recording made without it)."""
    from analysis.metrics import has

    return ROLE_METHOD if has(rec, "position_mass") else "changepoint"


def measured_tiers(rec: Recording, query: QuerySelector = None,
                   thresholds: RoleThresholds | None = None) -> TierAssignment:
    """Tiers by :func:`measured_method`; the result's ``method`` says which."""
    return derive_tiers(rec, measured_method(rec), query, thresholds)


def derive_tiers(rec: Recording, method: str = ROLE_METHOD, query: QuerySelector = None,
                 thresholds: RoleThresholds | None = None) -> TierAssignment:
    """Tiers for the recorded model.

    Args:
        rec: a recording with at least ``frame_mass`` (anchors use ``position_mass``/``periodicity`` if present).
        method: ``"roles"`` (each layer by its heads' measured roles, :func:`role_tiers`),
            ``"changepoint"`` (three depth-ordered segments, see module docstring) or ``"hermes-fixed"``.
        query: the query kind(s) whose attention defines the features (default: all).
        thresholds: where heads start to have recency or anchors (``roles`` only; default :class:`RoleThresholds`).
    """
    if method in ("hermes-fixed", "fixed"):
        return hermes_fixed_tiers(rec.num_layers)
    if method == ROLE_METHOD:
        return role_tiers(rec, query, thresholds)
    if method != "changepoint":
        raise StudyError(f"unknown tier method {method!r}; use 'roles', 'changepoint' or 'hermes-fixed'")
    names, head_x = tier_features(rec, query)
    layer_x = head_x.nanmean(dim=1)  # (L, D): a layer is the mean of its heads
    layer_z = standardise(layer_x)
    a, b, cost = best_two_changepoints(layer_z)
    tiers = tuple(["sensory"] * a + ["working"] * (b - a) + ["long-term"] * (rec.num_layers - b))
    heads = assign_heads(standardise(head_x, ref=layer_x), layer_z, tiers)
    features = {n: tuple(float(v) for v in layer_x[:, d]) for d, n in enumerate(names)}
    return TierAssignment(tiers, tuple(tuple(h) for h in heads), "changepoint", features, cost)


def layer_list(layers: Sequence[int]) -> str:
    """``[4]`` -> ``layer 4``, ``[0, 4]`` -> ``layers 0, 4``: how notes name layers."""
    return ("layer " if len(layers) == 1 else "layers ") + ", ".join(str(i) for i in layers)


def out_of_order(tiers: Sequence[str]) -> list[int]:
    """The fewest layers whose tiers must change for the rest to run sensory -> working -> long-term with depth.

    The complement of the longest depth-ordered subsequence (ties broken towards deeper layers), e.g.
    ``working working sensory sensory long-term`` -> [0, 1]: a shallow exception, reported rather than absorbed.
    """
    order = [TIERS.index(t) for t in tiers]
    best: list[list[int]] = []  # best[i]: the longest ordered subsequence ending at layer i
    for i, o in enumerate(order):
        prev = [best[j] for j in range(i) if order[j] <= o]
        best.append(max(prev, key=len, default=[]) + [i])
    keep = set(max(reversed(best), key=len, default=[]))
    return [i for i in range(len(order)) if i not in keep]


def tier_checks(tiers: TierAssignment) -> dict[str, bool]:
    """Whether measured features agree with HERMES's picture (recency falls, anchors rise with depth).

    ``tiers_follow_depth``: the tiers run sensory, working, long-term from shallow to deep. Then, per
    available feature, whether its tier means move the expected way in that order (left out when
    the feature was not measured).
    """
    out: dict[str, bool] = {"tiers_follow_depth": tiers.in_depth_order}
    expect = {"newest10": -1, "decay": -1, "concentration": 1, "periodicity": 1}
    for name, values in tiers.features.items():
        means = []
        for tier in TIERS:
            idx = tiers.layers_in(tier)
            vals = [values[i] for i in idx if not math.isnan(values[i])]
            if vals:
                means.append(sum(vals) / len(vals))
        pairs = list(zip(means, means[1:]))
        sign = expect[name]
        out[f"{name}_{'falls' if sign < 0 else 'rises'}_with_depth"] = all(sign * (y - x) >= 0 for x, y in pairs)
    return out


# --------------------------------------------------------------------------- policy spec
def score_row(family: str) -> tuple[str, str | None]:
    """Which HERMES working-tier row applies to a model family: (row, note or None).

    HERMES released rows for LLaVA-OneVision and Qwen2.5-VL. Our Qwen adapter
    serves Qwen2-VL and Qwen2.5-VL alike, so both take the Qwen2.5-VL row; any
    other family takes the LLaVA-OV row, and the note says so.
    """
    f = family.lower()
    if "llava" in f:
        return "llava-ov", None
    if "qwen" in f:
        note = None if "2.5" in f or "2_5" in f else f"family {family!r}: using HERMES's Qwen2.5-VL row"
        return "qwen2.5-vl", note
    return "llava-ov", f"HERMES has no score row for family {family!r}; using its LLaVA-OV row"


def working_scores(row: str, p: float) -> tuple[float, float]:
    """(alpha, k) for a working layer at relative depth p in [0, 1] of the working band."""
    if row == "qwen2.5-vl":
        return 0.75 - 0.6 * p, 20.0 - 12.0 * p
    return 1.0 - 0.9 * p, 20.0 - 19.5 * p


def budget_shares(tiers: Sequence[str], weights: Mapping[str, float] | None = None) -> list[float]:
    """Per-layer share of the video-token budget, summing to 1.

    Default: equal shares (HERMES keeps an equal number of video tokens per
    layer). ``weights`` (tier -> relative weight, missing tiers 1) lets a
    study give, e.g., long-term layers twice the tokens.
    """
    w = [float((weights or {}).get(t, 1.0)) for t in tiers]
    if any(x < 0 or not math.isfinite(x) for x in w) or sum(w) <= 0:
        raise StudyError(f"budget weights must be finite, non-negative and not all zero, got {dict(weights or {})}")
    total = sum(w)
    return [x / total for x in w]


def policy_spec(
    tiers: TierAssignment,
    family: str,
    method: str,
    source: Mapping[str, Any] | None = None,
    budget_weights: Mapping[str, float] | None = None,
    budget: int | None = None,
    model_layers: Sequence[int] | None = None,
) -> PolicySpec:
    """The ``hermes`` PolicySpec for a tier assignment.

    ``model_layers`` names the decoder layer of each entry (``layer``); by default entry ``i`` is layer ``i``.
    A hybrid model's spec has entries for its attention layers only, each naming its decoder layer.

    ``params`` holds ``gamma`` (HERMES's per-tier smoothing), ``family`` (the
    score row used, as the hermes policy names it) and, if given, ``budget``
    (mean video tokens per layer). The hermes policy refuses to run without a
    budget, and ``stream --spec`` takes the budget from the spec, so pass one
    for a spec you mean to run.

    Per layer: ``tier``, ``alpha`` and ``k`` of ``score = (1-α)·minmax(attn) +
    α·minmax(exp(-k·d))`` (sensory α=1, k=20; long-term α=0, k=None; working
    from the family's row at p = (i - first working) / (last - first working),
    p = 0 for a one-layer band), ``budget_share`` and, when measured, ``heads``.
    Values are rounded to 6 decimals so that 1 - 0.9 reads as 0.1 in the JSON.
    """
    row, note = score_row(family)
    work = tiers.layers_in("working")
    shares = budget_shares(tiers.layers, budget_weights)
    layers: list[dict[str, Any]] = []
    for i, tier in enumerate(tiers.layers):
        if tier == "sensory":
            alpha, k = 1.0, SENSORY_K
        elif tier == "long-term":
            alpha, k = 0.0, None
        else:
            p = (i - work[0]) / (work[-1] - work[0]) if len(work) > 1 else 0.0
            alpha, k = working_scores(row, p)
        entry: dict[str, Any] = {"layer": i if model_layers is None else int(model_layers[i]), "tier": tier,
                                 "alpha": round(alpha, 6),
                                 "k": None if k is None else round(k, 6), "budget_share": round(shares[i], 9)}
        if tiers.heads is not None:
            entry["heads"] = list(tiers.heads[i])
        layers.append(entry)
    src: dict[str, Any] = {"method": method, "family": family, "score_row": row,
                           "budget": "equal" if not budget_weights else {"weights": dict(budget_weights)}}
    if note:
        src["score_note"] = note
    src.update(source or {})
    params: dict[str, Any] = {"gamma": dict(GAMMA), "family": row}
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise StudyError(f"the budget is video tokens per layer, a positive integer; got {budget!r}")
        params["budget"] = budget
    return PolicySpec(policy="hermes", params=params, layers=layers, source=src)


def tier_ranges_json(tiers: TierAssignment) -> dict[str, Any]:
    """Tier -> [first, last] when the tiers follow depth, else tier -> [[first, last], ...] runs (None: empty)."""
    if tiers.in_depth_order:
        return {t: (list(r) if r else None) for t, r in tiers.ranges().items()}
    return {t: ([list(x) for x in r] if r else None) for t, r in tiers.runs().items()}


#: ``derive --method`` -> the tier method it uses
DERIVE_METHODS = {"measured": ROLE_METHOD, "changepoint": "changepoint", "hermes-fixed": "hermes-fixed"}


def derive(
    rec: Recording,
    method: Literal["measured", "changepoint", "hermes-fixed"] = "measured",
    query: QuerySelector = None,
    budget_weights: Mapping[str, float] | None = None,
    budget: int | None = None,
    thresholds: RoleThresholds | None = None,
) -> PolicySpec:
    """A ``hermes`` PolicySpec for the recorded model (``budget``: see :func:`policy_spec`).

    ``measured`` gives each layer the tier of its heads' measured roles (:func:`role_tiers`);
    ``changepoint`` splits the layers into three depth-ordered segments; ``hermes-fixed`` uses
    the released depth split and reads only the layer count and family. ``source`` records the
    method, model, video, features used, tier ranges (runs when out of depth order, with the
    fewest layers that break the order), boundaries (in depth order), layers with no role,
    and the per-layer feature values and agreement checks.
    """
    if method not in DERIVE_METHODS:
        raise StudyError(f"unknown derive method {method!r}; use {', '.join(DERIVE_METHODS)}")
    thresholds = thresholds or RoleThresholds()
    tiers = derive_tiers(rec, DERIVE_METHODS[method], query, thresholds)
    info = rec.meta.get("model_info") or {}
    family = str(info.get("family") or rec.meta.get("family") or "unknown")
    source: dict[str, Any] = {
        "method": method,
        "tier_method": tiers.method,
        "model": rec.meta.get("model"),
        "video": rec.meta.get("video"),
        "fps": rec.meta.get("fps"),
        "queries": rec.queries if query is None else ([query] if isinstance(query, str) else list(query)),
        "features": list(tiers.features),
        "tiers": tier_ranges_json(tiers),
    }
    if tiers.in_depth_order:
        a, b = tiers.boundaries
        source["boundaries"] = {"working": a, "long-term": b}
    else:
        source["out_of_order_layers"] = out_of_order(tiers.layers)
    if tiers.method == ROLE_METHOD:
        source["no_role_layers"] = list(tiers.no_role)
        source["thresholds"] = {"decay": thresholds.decay, "concentration": thresholds.concentration}
    if tiers.features:
        source["feature_values"] = {n: [round(v, 6) for v in vals] for n, vals in tiers.features.items()}
        source["cost"] = tiers.cost
        source["checks"] = tier_checks(tiers)
    if rec.unattended_layers:
        source["no_attention_layers"] = rec.unattended_layers  # linear attention: no cache, so no tier
    return policy_spec(tiers, family, method, json_safe(source), budget_weights, budget, rec.model_layers)
