"""Run budgets: what a policy may size itself by per video, and :class:`PolicyRecipe`, a policy sized per video.

Budgets: a :class:`PolicyRecipe` with ``budget_ratio=r`` gets, per video,
``max(min_budget, round(r * video_tokens))`` where ``video_tokens = ceil(frames
/ frames_per_group) * tokens_per_frame`` counts the *whole* video at the
sampled rate (tokens per frame from its first frame's size) and ``min_budget``
is the smallest budget the policy accepts (one frame plus any reserved
tokens; for per-layer splits such as ``hermes``, the smallest whose every
layer holds a frame). An absolute ``budget`` is used as is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hermes_policy.data.dataset import VideoItem
from hermes_policy.errors import BudgetError, PolicyError
from hermes_policy.eval.errors import EvalError
from hermes_policy.models.base import ModelAdapter
from hermes_policy.policies import POLICIES, Policy, PolicySpec, make_policy
from hermes_policy.video import open_video
from hermes_policy.video.frames import VideoSource


@dataclass(frozen=True)
class StreamInfo:
    """What a policy factory may size itself by, for one video.

    Attributes:
        video: the item's video spec or path.
        frames: frames of the whole video at the sampled rate.
        tokens_per_frame: video tokens one frame group adds (the session's unit).
        frames_per_group: frames the model fuses into one group (2 for Qwen-VL).
        num_layers: decoder layers (per-layer budgets are validated against them).
    """

    video: str
    frames: int
    tokens_per_frame: int
    frames_per_group: int = 1
    num_layers: int = 1

    @property
    def video_tokens(self) -> int:
        """Video tokens of the whole stream: ``ceil(frames / frames_per_group) * tokens_per_frame``."""
        return -(-self.frames // self.frames_per_group) * self.tokens_per_frame


PolicyFactory = Callable[[StreamInfo], Policy]


def _feasible(build: Callable[[int], Policy], budget: int, info: StreamInfo) -> Policy | None:
    try:
        policy = build(budget)
        policy.validate(info.tokens_per_frame, info.num_layers)
    except BudgetError:
        return None
    return policy


def fit_budget(build: Callable[[int], Policy], want: int, info: StreamInfo) -> Policy:
    """``build(want)`` if it holds a frame, else ``build(b)`` for the smallest feasible ``b > want``.

    Feasibility is assumed monotone in the budget: found by doubling, then bisection.
    """
    policy = _feasible(build, want, info)
    if policy is not None:
        return policy
    lo, hi = want, max(want, info.tokens_per_frame, 1)
    for _ in range(40):
        hi *= 2
        if _feasible(build, hi, info) is not None:
            break
        lo = hi
    else:
        build(want).validate(info.tokens_per_frame, info.num_layers)  # re-raises the policy's own error
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _feasible(build, mid, info) is not None else (mid, hi)
    policy = _feasible(build, hi, info)
    assert policy is not None
    return policy


@dataclass(frozen=True)
class PolicyRecipe:
    """A policy to evaluate, sized per video; calling it with a :class:`StreamInfo` builds one.

    Attributes:
        name: registered policy name.
        budget: absolute video tokens per layer (wins over ``budget_ratio``).
        budget_ratio: fraction of each video's video tokens (see the module docstring).
        params: other constructor parameters (e.g. a PolicySpec's params and layers).
        label: the name results are reported under (default :attr:`key`).
        source: where it came from (e.g. a spec path), for the resolved config.
        variant: tells two configurations of one policy apart (e.g. a spec file's stem):
            the policy is reported as ``name[variant]``.
    """

    name: str
    budget: int | None = None
    budget_ratio: float | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None
    source: str | None = None
    variant: str | None = None

    def __post_init__(self) -> None:
        check_policy(self.name)
        if self.budget is not None and not _positive_int(self.budget):
            raise BudgetError(f"budget must be a positive integer (video tokens per layer), got {self.budget!r}")
        ratio = self.budget_ratio
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                                  or not (math.isfinite(ratio) and ratio > 0)):
            raise BudgetError(f"budget ratio must be a number > 0, got {ratio!r}")
        if not isinstance(self.params, Mapping):
            raise PolicyError(f"policy {self.policy_label!r}: params must be a mapping of its parameters, "
                              f"got {self.params!r}")
        own = self.params.get("budget")  # e.g. a spec's own budget
        if own is not None and not _positive_int(own):
            source = f" (from {self.source})" if self.source else ""
            raise BudgetError(f"policy {self.policy_label!r}: the budget{source} must be a positive integer "
                              f"(video tokens per layer), got {own!r}")
        # build one now, so a missing budget or a bad parameter fails before any model is loaded
        if not takes_budget(self.name):
            return
        if self.budget is None and self.budget_ratio is None:
            try:
                self._build(None)
            except BudgetError:
                if own is not None:  # it has a budget: the policy refused something else about it
                    raise
                raise EvalError(f"policy {self.key!r} needs a budget: pass --budget-ratio R or --budget N") from None
        else:
            self._build(self.budget if self.budget is not None else 1 << 20)

    @property
    def policy_label(self) -> str:
        """The policy as listed: ``name``, or ``name[variant]``."""
        return f"{self.name}[{self.variant}]" if self.variant else self.name

    @property
    def budget_given(self) -> int | float | None:
        """The budget as given: absolute tokens, a ratio, a spec's own budget, or None (``full``, none given)."""
        if self.name == "full":
            return None
        if self.budget is not None:
            return self.budget
        if self.budget_ratio is not None:
            return self.budget_ratio
        return self.params.get("budget")

    @property
    def key(self) -> str:
        """The run's label: ``label`` if given, else e.g. ``hermes@0.3``, ``sink-window@512``, ``full``."""
        if self.label:
            return self.label
        given = self.budget_given
        return self.policy_label if given is None else f"{self.policy_label}@{format_budget(given)}"

    @classmethod
    def from_spec(cls, spec: PolicySpec, budget: int | None = None, budget_ratio: float | None = None,
                  label: str | None = None, source: str | None = None,
                  variant: str | None = None) -> PolicyRecipe:
        """A spec's policy; ``budget``/``budget_ratio`` override the spec's own budget.

        The spec is checked against the PolicySpec schema first (a loaded one already was).
        """
        spec.validate()
        params = dict(spec.params)
        if spec.layers is not None:
            params["layers"] = spec.layers
        if budget is not None or budget_ratio is not None:
            params.pop("budget", None)
        return cls(spec.policy, budget, budget_ratio, params, label, source, variant)

    def _build(self, budget: int | None) -> Policy:
        params = dict(self.params)
        if budget is not None:
            params["budget"] = budget
        return make_policy(self.name, **params)

    def __call__(self, info: StreamInfo) -> Policy:
        if self.name == "full":  # keeps everything: any budget is meaningless
            return make_policy("full", **{k: v for k, v in self.params.items() if k != "budget"})
        if self.budget is not None:
            policy = self._build(self.budget)
            policy.validate(info.tokens_per_frame, info.num_layers)  # fail before streaming, not mid-way
            return policy
        if self.budget_ratio is not None:
            want = max(1, round(self.budget_ratio * info.video_tokens))
            return fit_budget(self._build, want, info)
        return self._build(None)  # the params' own budget (e.g. a spec's); checked in __post_init__

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.key, "policy": self.name, "policy_label": self.policy_label,
                "budget": self.budget, "budget_ratio": self.budget_ratio, "budget_given": self.budget_given,
                "params": dict(self.params), "source": self.source}


def format_budget(budget: float) -> str:
    """``512`` -> ``"512"``, ``0.3`` -> ``"0.3"`` (as a run label shows it)."""
    return f"{budget:g}" if isinstance(budget, float) else str(budget)


def _positive_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def check_policy(name: str) -> None:
    """Raise PolicyError unless ``name`` is a registered policy."""
    if name not in POLICIES:
        raise PolicyError(f"unknown policy {name!r}; available: {', '.join(sorted(POLICIES))}")


def takes_budget(name: str) -> bool:
    """Whether a registered policy uses a budget at all (``full`` does not): a sweep runs it once."""
    return POLICIES[name].requires_budget


def stream_info(adapter: ModelAdapter, item: VideoItem, fps: float | None = None) -> StreamInfo:
    """Frames and tokens per frame of one video, without decoding it (unless its length is unknown)."""
    source = open_item(item, fps)
    frames = source.num_frames
    width, height = getattr(source, "width", None), getattr(source, "height", None)
    if frames is None or width is None or height is None:
        count = 0
        for frame in source.frames():  # no metadata: one decoding pass
            if count == 0:
                height, width = frame.image.shape[:2]
            count += 1
        frames = frames if frames is not None else count
    if not frames or width is None or height is None:
        raise EvalError(f"{item.video}: the video has no frames")
    return StreamInfo(item.video, int(frames), adapter.tokens_per_frame(int(height), int(width)),
                      adapter.frames_per_group, adapter.num_layers)


def open_item(item: VideoItem, fps: float | None = None) -> VideoSource:
    """The item's video; ``fps`` resamples files only (a synthetic spec's questions are timed at its own rate)."""
    return open_video(item.video, fps=None if item.is_synthetic else fps)


__all__ = [
    "PolicyFactory",
    "PolicyRecipe",
    "StreamInfo",
    "check_policy",
    "fit_budget",
    "format_budget",
    "open_item",
    "stream_info",
    "takes_budget",
]
