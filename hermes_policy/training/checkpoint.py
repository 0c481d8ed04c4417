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


def missing_parts(directory: Path, backbone: str = "scratch") -> list[str]:
    """The files a checkpoint of ``backbone`` needs that ``directory`` lacks (empty: complete).

    Every checkpoint has the optimiser state and the front end; a scratch run's also holds its language
    model (config, weights, tokenizer), which the run is rebuilt from.
    """
    need = [STATE_FILE, "frontend.json"]
    if backbone == "scratch":
        need += ["config.json", "model.safetensors", "tokenizer.json"]
    return [name for name in need if not (directory / name).is_file()]


def has_checkpoint(directory: Path, backbone: str = "scratch") -> bool:
    """Whether ``directory`` holds a complete checkpoint to resume from."""
    return directory.is_dir() and not missing_parts(directory, backbone)


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


__all__ = ["STATE_FILE", "has_checkpoint", "missing_parts", "restore_checkpoint", "write_checkpoint"]
