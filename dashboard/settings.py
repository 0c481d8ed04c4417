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
    """

    studies: tuple[str, ...] = ()
    model: str = DEFAULT_MODEL
    video: str = DEFAULT_VIDEO
    runs: str = DEFAULT_RUNS

    @property
    def runs_dir(self) -> Path:
        return Path(self.runs)

    def to_args(self) -> list[str]:
        """The arguments that :func:`parse_args` turns back into these settings."""
        args: list[str] = []
        for study in self.studies:
            args += ["--study", study]
        return [*args, "--model", self.model, "--video", self.video, "--runs", self.runs]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hermes-lab dashboard (app)", add_help=False)
    p.add_argument("--study", action="append", default=[])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--video", default=DEFAULT_VIDEO)
    p.add_argument("--runs", default=DEFAULT_RUNS)
    return p


def parse_args(argv: list[str]) -> Settings:
    # parse_known_args: an unknown flag must not kill the app (it would show a bare SystemExit page)
    ns, _ = parser().parse_known_args(argv)
    return Settings(tuple(ns.study), ns.model, ns.video, ns.runs)


def from_environment(main_script: str | Path) -> Settings:
    """Settings from ``sys.argv`` when ``main_script`` is what ``streamlit run`` started, else from the env var."""
    if sys.argv and Path(sys.argv[0]).resolve() == Path(main_script).resolve():
        return parse_args(sys.argv[1:])
    return parse_args(shlex.split(os.environ.get(ENV_ARGS, "")))


__all__ = ["DEFAULT_MODEL", "DEFAULT_RUNS", "DEFAULT_VIDEO", "ENV_ARGS", "Settings", "from_environment", "parse_args"]
