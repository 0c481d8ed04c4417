"""Command-line options that several commands share, declared once (typer ``Annotated`` aliases).

For CLI modules only: library code never imports this.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from hermes_policy.errors import OptionError
from hermes_policy.video.frames import FPS_RANGE


class Bounded:
    """Parses an option's text into a number in a closed range (``low`` excluded when ``low_open``).

    click's ``FloatRange`` lets NaN through (every comparison with it is false) and reports in its
    usage-error format; this says the option, the range and the value in one ``hermes-lab: error:`` line.
    """

    def __init__(self, option: str, kind: type, low: float, high: float, low_open: bool = False) -> None:
        self.option, self.kind, self.low, self.high, self.low_open = option, kind, low, high, low_open

    def describe(self) -> str:
        def show(x: float) -> str:  # 2592000, not 2.592e+06; 0.001 as it is
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        return f"{'(' if self.low_open else '['}{show(self.low)}, {show(self.high)}]"

    def __call__(self, value: Any) -> Any:
        number: float | int | None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = self.kind(value)
        else:
            try:
                number = self.kind(str(value).strip())
            except (ValueError, OverflowError):
                number = None
        if number is None or not math.isfinite(number) or number > self.high or \
                (number <= self.low if self.low_open else number < self.low):
            kind = "an integer" if self.kind is int else "a number"
            raise OptionError(f"{self.option} must be {kind} in {self.describe()}, got {value!r}")
        return number


def bounded(option: str, help: str, low: float, high: float, *, kind: type = float, low_open: bool = False,
            **settings: Any) -> Any:
    """A ``typer.Option`` (named ``option``, e.g. ``"--fps"``) taking a number in a range its help states."""
    parse = Bounded(option, kind, low, high, low_open)
    return typer.Option(help=f"{help} {parse.describe()}", parser=parse, **settings)


def fps_option(help: str) -> Any:
    """``--fps``, bounded to :data:`~hermes_policy.video.frames.FPS_RANGE` (the range every video reader checks)."""
    return bounded("--fps", f"{help}, in frames per second, in", *FPS_RANGE)


def share_option(option: str, help: str) -> Any:
    """A share of something: a number in [0, 1]."""
    return bounded(option, f"{help}; in", 0.0, 1.0)


DeviceMapOption = Annotated[str | None, typer.Option(
    help="spread the model over devices with accelerate: auto | balanced | balanced_low_0 | sequential | a JSON "
         "file of module -> device (cuda:0, cpu, disk)")]
MaxMemoryOption = Annotated[str | None, typer.Option(
    help="with --device-map: caps per device, e.g. 0=20GiB,1=20GiB,cpu=64GiB")]
OffloadFolderOption = Annotated[Path | None, typer.Option(
    help="with --device-map: folder for the weights it sends to disk")]
GpusPerRankOption = Annotated[int | None, typer.Option(
    help="under torchrun / accelerate launch with --device-map: GPUs each rank spreads its model over "
         "(LOCAL_RANK x G onward; 8 GPUs = 4 ranks x 2)")]

DistTimeoutOption = Annotated[float, bounded(
    "--dist-timeout",
    "under torchrun / accelerate launch: seconds without any finished piece of work (an eval unit, a study video, a "
    "bench cell) after which rank 0 gives up, and every collective's timeout; in", 1, 30 * 86400)]
FrameSizeOption = Annotated[str | None, typer.Option(
    help="WIDTHxHEIGHT: scale the video's frames (or render the synthetic scene) to this size before the model's "
         "own processor; default: the video's own size")]
GranularityOption = Annotated[str | None, typer.Option(
    help="layer: every KV head of a layer keeps the same rows; head: each KV head keeps its own (a per-head "
         "cache; hermes and full). Default: the policy's own (hermes-head and hermes-adakv are per head)")]
TrustRemoteCodeOption = Annotated[bool, typer.Option(help="allow a checkpoint's own Python code")]
AllowPickleOption = Annotated[bool, typer.Option(
    "--allow-pickle-weights",
    help="also load a checkpoint whose weights are pickle files (pytorch_model.bin, *.pt): unpickling can run "
         "code from the file, so only for checkpoints you trust; without it only safetensors weights load")]
OverwriteOption = Annotated[bool, typer.Option(
    help="replace an --out that already holds something (a file, or a folder that is not empty)")]

__all__ = ["Bounded", "DeviceMapOption", "DistTimeoutOption", "FrameSizeOption", "GpusPerRankOption", "MaxMemoryOption",
           "AllowPickleOption", "OffloadFolderOption", "OverwriteOption", "TrustRemoteCodeOption", "bounded",
           "fps_option", "share_option"]
