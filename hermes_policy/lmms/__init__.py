"""hermes-lab as an lmms-eval model: ``lmms-eval --model hermes_lab --model_args model=...,policy=...,budget=...``.

Installed by the ``lmms`` extra (``pip install -e .[lmms]``), which brings lmms-eval; the package's
``lmms_eval.models`` entry point names :func:`manifest`, so lmms-eval finds the model without any import
of ours on its side. Nothing here is needed by hermes-lab itself, and importing this package does not
import lmms-eval (only :mod:`hermes_policy.lmms.model` does).

* :mod:`~hermes_policy.lmms.streams`: visuals to a stream, the policy sized per stream, answers from the
  compact cache (testable without lmms-eval);
* :mod:`~hermes_policy.lmms.model`: the ``lmms`` subclass lmms-eval instantiates;
* ``tasks/``: the bundled tiny tasks (``--include_path`` :func:`tasks_path`) over synthetic videos.
"""

from __future__ import annotations

from pathlib import Path

MODEL_ID = "hermes_lab"
MODEL_CLASS = "hermes_policy.lmms.model.HermesLab"


def manifest():
    """The lmms-eval ``ModelManifest`` of the ``hermes_lab`` model (what the entry point hands lmms-eval)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=MODEL_CLASS, aliases=("hermes-lab",))


def tasks_path() -> Path:
    """The folder of the bundled tiny tasks, for ``lmms-eval --include_path``."""
    return Path(__file__).resolve().parent / "tasks"


__all__ = ["MODEL_CLASS", "MODEL_ID", "manifest", "tasks_path"]
