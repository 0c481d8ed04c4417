"""A training run's checkpoint: the model (as the run saves it), both optimisers, the step and the RNG states.

Written every ``checkpoint_every`` steps; ``train(resume=True)`` continues from it exactly where it stopped.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hermes_policy.atomic import atomic_dir

if TYPE_CHECKING:  # the loop imports this module; the run is only a type here
    from hermes_policy.training.loop import TrainingRun

STATE_FILE = "state.pt"
Optimisers = tuple[torch.optim.Optimizer, torch.optim.Optimizer]


def has_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` holds a complete checkpoint to resume from."""
    return (directory / STATE_FILE).exists()


def write_checkpoint(run: TrainingRun, optimisers: Optimisers, step: int, rng: random.Random,
                     directory: Path) -> None:
    """Write atomically: a kill mid-write leaves the previous checkpoint usable.

    ``optimisers``: the LM stages' and the vision stage's, in that order.
    """
    with atomic_dir(directory) as staging:
        # the config too: a checkpoint loaded by path must say how it answers (``mc_answer``)
        run.save(staging, extra={"training": asdict(run.cfg), "steps": step}, checkpoint=True)
        optimiser, vision_optimiser = optimisers
        torch.save({"optimiser": optimiser.state_dict(), "vision_optimiser": vision_optimiser.state_dict(),
                    "vision_head": run.vision_head.state_dict(), "step": step, "rng": rng.getstate(),
                    "torch_rng": torch.get_rng_state()}, staging / STATE_FILE)


def restore_checkpoint(directory: Path, run: TrainingRun, optimisers: Optimisers, rng: random.Random) -> int:
    """Load the optimisers, the vision head and the RNG states written by :func:`write_checkpoint`.

    The weights are not loaded here: the run was built from ``directory`` already. Returns the step to continue at.
    """
    state = torch.load(directory / STATE_FILE, weights_only=True)  # tensors and plain Python values only
    optimiser, vision_optimiser = optimisers
    optimiser.load_state_dict(state["optimiser"])
    vision_optimiser.load_state_dict(state["vision_optimiser"])
    run.vision_head.load_state_dict(state["vision_head"])
    rng.setstate(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    return state["step"]


__all__ = ["STATE_FILE", "has_checkpoint", "restore_checkpoint", "write_checkpoint"]
