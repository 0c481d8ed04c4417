"""What the dashboard was launched with: ``--study`` directories, the default model and video, the runs folder.

``hermes-lab dashboard`` passes these after ``--`` on the ``streamlit run``
command line. A script that is not the Streamlit entry point (a test's
``AppTest``) passes them in ``HERMES_DASHBOARD_ARGS`` instead, with the same syntax.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "embedded"
#: short enough that the no-argument launch records a study within a minute on a laptop CPU
DEFAULT_VIDEO = "synthetic:seed=1,frames=16"
DEFAULT_RUNS = "runs/dashboard"
ENV_ARGS = "HERMES_DASHBOARD_ARGS"


@dataclass(frozen=True)
class Settings:
    """Launch settings.

    Attributes:
        studies: recording directories given with ``--study`` (shown first in the recording picker).
        model: the model selected when the app opens.
        video: the video spec or file every page starts from.
        runs: folder for what the app writes: recordings it makes, uploads, specs, figures.
        device_map, max_memory, offload_folder: how every model the app loads is placed over devices
            (``--device-map`` etc., as on the other commands); None: one device.
        evals, benches: ``eval --out`` / ``bench --out`` folders the Results page opens with.
        allow_pickle_weights: checkpoints may load pickle weights (``--allow-pickle-weights``).
    """

    studies: tuple[str, ...] = ()
    model: str = DEFAULT_MODEL
    video: str = DEFAULT_VIDEO
    runs: str = DEFAULT_RUNS
    device_map: str | None = None
    max_memory: str | None = None
    offload_folder: str | None = None
    evals: tuple[str, ...] = ()
    benches: tuple[str, ...] = ()
    allow_pickle_weights: bool = False

    @property
    def runs_dir(self) -> Path:
        return Path(self.runs)

    def to_args(self) -> list[str]:
        """The arguments that :func:`parse_args` turns back into these settings."""
        args: list[str] = []
        for study in self.studies:
            args += ["--study", study]
        args += ["--model", self.model, "--video", self.video, "--runs", self.runs]
        for flag, value in (("--device-map", self.device_map), ("--max-memory", self.max_memory),
                            ("--offload-folder", self.offload_folder)):
            if value is not None:
                args += [flag, value]
        for folder in self.evals:
            args += ["--eval", folder]
        for folder in self.benches:
            args += ["--bench", folder]
        if self.allow_pickle_weights:
            args.append("--allow-pickle-weights")
        return args

    def placement(self):
        """The :class:`~hermes_policy.models.placement.Placement` models are loaded with (raises ModelError)."""
        from hermes_policy.models.placement import placement_from_options

        return placement_from_options("cpu", self.device_map, self.max_memory, self.offload_folder)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hermes-lab dashboard (app)", add_help=False)
    p.add_argument("--study", action="append", default=[])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--video", default=DEFAULT_VIDEO)
    p.add_argument("--runs", default=DEFAULT_RUNS)
    p.add_argument("--device-map", default=None)
    p.add_argument("--max-memory", default=None)
    p.add_argument("--offload-folder", default=None)
    p.add_argument("--eval", action="append", default=[])
    p.add_argument("--bench", action="append", default=[])
    p.add_argument("--allow-pickle-weights", action="store_true")
    return p


def parse_args(argv: list[str]) -> Settings:
    # parse_known_args: an unknown flag must not kill the app (it would show a bare SystemExit page)
    ns, _ = parser().parse_known_args(argv)
    return Settings(tuple(ns.study), ns.model, ns.video, ns.runs, ns.device_map, ns.max_memory, ns.offload_folder,
                    tuple(ns.eval), tuple(ns.bench), ns.allow_pickle_weights)


def from_environment(main_script: str | Path) -> Settings:
    """Settings from ``sys.argv`` when ``main_script`` is what ``streamlit run`` started, else from the env var."""
    if sys.argv and Path(sys.argv[0]).resolve() == Path(main_script).resolve():
        return parse_args(sys.argv[1:])
    return parse_args(shlex.split(os.environ.get(ENV_ARGS, "")))


__all__ = ["DEFAULT_MODEL", "DEFAULT_RUNS", "DEFAULT_VIDEO", "ENV_ARGS", "Settings", "from_environment", "parse_args"]
