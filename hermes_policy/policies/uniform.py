"""``uniform``: uniform frame sampling, streamed, to the same video-token budget.

This is the baseline behind HERMES's "up to 68% fewer video tokens than
uniform sampling" claim: instead of choosing tokens, keep *whole frames*
spaced evenly over the stream.

Offline uniform sampling picks ``budget // tokens_per_frame`` frames evenly
over a video whose length is known. A stream's length is not known, and a
frame that was dropped cannot come back, so this policy uses the standard
streaming answer, a **stride-doubling reservoir**:

* frame units are numbered in arrival order, ``u = 0, 1, 2, ...`` (a unit is
  what the adapter tags as one frame in :class:`~hermes_policy.tokens.TokenMeta`;
  for Qwen-VL that is a temporal group of two frames);
* the unit ``u`` is kept iff ``u % stride == 0``; the stride starts at 1;
* whenever the kept video tokens exceed the budget, the stride doubles, which
  drops every other kept unit (the odd multiples of the old stride), until
  they fit.

So the kept units are always ``0, s, 2s, ...`` up to now: evenly spread over
``[0, now]``, always including the first unit, the newest kept one being
fewer than ``s`` units old. Occupancy stays between about half the budget and
the budget (never above it); offline uniform sampling would fill it exactly.

Every layer makes the same decision (sampling is a property of the input, not
of a layer). The system prefix is always kept. ``validate`` (from the base
class) rejects a budget smaller than one frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hermes_policy.policies.base import Policy, register_policy

_STATE = "uniform"


@register_policy
@dataclass
class UniformPolicy(Policy):
    """Whole frames at a power-of-two stride over the stream so far.

    Attributes:
        budget: video tokens per layer (required); whole frames only, never exceeded.

    Per-stream state lives in ``cache.policy_state["uniform"]``: the stride, the
    next unit number and the unit number of every kept frame.
    """

    name = "uniform"
    exact_under_budget = True

    def after_chunk(self, session) -> None:
        cache = session.cache
        state = cache.policy_state.setdefault(_STATE, {"stride": 1, "next_unit": 0, "units": {}})
        # Every layer holds the same frames under this policy, so layer 0 tells
        # which frame units arrived with this chunk (in time order).
        frames = cache.meta(0).frame
        held = torch.unique_consecutive(frames[frames >= 0]).tolist()
        units: dict[int, int] = state["units"]  # frame id -> arrival number, kept frames only
        for frame in held:
            if frame not in units:
                units[frame] = state["next_unit"]
                state["next_unit"] += 1
        sizes = {f: int((frames == f).sum()) for f in held}
        budget = min(b for b in self.layer_budgets(cache.num_layers) if b is not None)

        def kept(stride: int) -> list[int]:
            return [f for f in held if units[f] % stride == 0]

        stride = state["stride"]
        # Double until the kept frames fit. Unit 0 alone always fits (validate
        # guaranteed budget >= one frame), so this terminates.
        while sum(sizes[f] for f in kept(stride)) > budget:
            stride *= 2
        state["stride"] = stride
        keep_frames = kept(stride)
        state["units"] = {f: units[f] for f in keep_frames}
        wanted = torch.tensor(keep_frames, dtype=frames.dtype)
        for layer in range(cache.num_layers):
            meta = cache.meta(layer)
            # non-video rows (the system prefix) always stay; video rows stay iff their frame is kept
            keep = torch.nonzero(~meta.is_video | torch.isin(meta.frame, wanted)).flatten()
            cache.evict(layer, keep)
