"""Command-line options that several commands share, declared once (typer ``Annotated`` aliases).

For CLI modules only: library code never imports this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DeviceMapOption = Annotated[Optional[str], typer.Option(
    help="spread the model over devices with accelerate: auto | balanced | balanced_low_0 | sequential | a JSON "
         "file of module -> device (cuda:0, cpu, disk)")]
MaxMemoryOption = Annotated[Optional[str], typer.Option(
    help="with --device-map: caps per device, e.g. 0=20GiB,1=20GiB,cpu=64GiB")]
OffloadFolderOption = Annotated[Optional[Path], typer.Option(
    help="with --device-map: folder for the weights it sends to disk")]
GpusPerRankOption = Annotated[Optional[int], typer.Option(
    help="under torchrun / accelerate launch with --device-map: GPUs each rank spreads its model over "
         "(LOCAL_RANK x G onward; 8 GPUs = 4 ranks x 2)")]

DistTimeoutOption = Annotated[float, typer.Option(
    help="under torchrun / accelerate launch: seconds without any finished piece of work (an eval unit, a study "
         "video, a bench cell) after which rank 0 gives up, and every collective's timeout")]
FrameSizeOption = Annotated[Optional[str], typer.Option(
    help="WIDTHxHEIGHT: scale the video's frames (or render the synthetic scene) to this size before the model's "
         "own processor; default: the video's own size")]
OverwriteOption = Annotated[bool, typer.Option(
    help="replace an --out that already holds something (a file, or a folder that is not empty)")]

__all__ = ["DeviceMapOption", "DistTimeoutOption", "FrameSizeOption", "GpusPerRankOption", "MaxMemoryOption",
           "OffloadFolderOption", "OverwriteOption"]
