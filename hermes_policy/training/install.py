"""Installing a trained model where ``--model embedded`` (or ``embedded-smollm2``) loads it from."""

from __future__ import annotations

import shutil
from pathlib import Path

from hermes_policy.atomic import atomic_write_json
from hermes_policy.errors import HermesError
from hermes_policy.eval.scoring import SCORERS
from hermes_policy.jsonfile import read_json
from hermes_policy.training.checkpoint import STATE_FILE


def check_mc_scoring(mc_scoring: str | None) -> None:
    """Raise ValueError unless ``mc_scoring`` is None or a scorer of :mod:`hermes_policy.eval.scoring`."""
    if mc_scoring is not None and mc_scoring not in SCORERS:
        raise ValueError(f"mc_scoring must be one of {', '.join(SCORERS)}, got {mc_scoring!r}")


def install_model(final: Path, target: Path, mc_scoring: str | None = None) -> None:
    """Copy a trained model into ``target`` (where ``--model embedded`` loads it from).

    The weights, config and tokenizer are replaced; the hand-written model card and its
    figures (``*.md``, ``*.png``) in ``target`` are kept. ``mc_scoring`` (a scorer of
    :mod:`hermes_policy.eval.scoring`) is how ``eval --scoring auto`` reads the installed model,
    recorded in its ``frontend.json``; None: its training format.
    """
    check_mc_scoring(mc_scoring)
    target.mkdir(parents=True, exist_ok=True)
    for old in target.iterdir():
        if old.suffix not in (".md", ".png"):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    shutil.copytree(final, target, ignore=shutil.ignore_patterns(STATE_FILE), dirs_exist_ok=True)
    if mc_scoring is not None:
        meta_path = target / "frontend.json"
        meta = read_json(meta_path, HermesError, "model file", expect=dict)
        meta["mc_scoring"] = mc_scoring
        atomic_write_json(meta_path, meta)


__all__ = ["check_mc_scoring", "install_model"]
