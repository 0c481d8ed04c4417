"""Placing a model over devices: one device, or accelerate's big-model device maps.

``--device-map auto|balanced|balanced_low_0|sequential|FILE.json`` (with ``--max-memory``
and an offload folder) spreads a model's layers over GPUs, CPU memory and disk, the way
``from_pretrained(device_map=...)`` does. Hub checkpoints are loaded with it directly;
models built here (``embedded``, ``tiny-*``) are dispatched after they are built, with
accelerate's own ``infer_auto_device_map`` and ``dispatch_model``. Either way accelerate's
hooks move activations between layers, and the compact cache keeps each layer's keys and
values on that layer's device.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hermes_policy.errors import ModelError
from hermes_policy.jsonfile import read_json
from hermes_policy.outputs import check_output

if TYPE_CHECKING:
    import torch

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)


@dataclass
class Placement:
    """Where a model's weights go.

    Attributes:
        device: the single device when there is no device map.
        device_map: a strategy from :data:`STRATEGIES`, or ``{module name: device}``; None: all on ``device``.
        max_memory: ``{device: bytes or "20GiB"}`` caps for a strategy (keys ``0``, ``"cuda:1"``, ``"cpu"``).
        offload_folder: where weights mapped to ``"disk"`` are written.
    """

    device: str = "cpu"
    device_map: str | dict[str, Any] | None = None
    max_memory: dict[Any, Any] | None = None
    offload_folder: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.device_map, str) and self.device_map not in STRATEGIES:
            raise ModelError(f"--device-map must be one of {', '.join(STRATEGIES)} or a JSON file, "
                             f"got {self.device_map!r}")
        if self.max_memory is not None and self.device_map is None:
            raise ModelError("--max-memory caps a --device-map; give one too (e.g. --device-map auto)")

    @property
    def mapped(self) -> bool:
        return self.device_map is not None

    def restricted_to(self, gpus: list[int]) -> Placement:
        """The same strategy over only these GPU indices (plus CPU and disk): one rank's share of a node.

        Without ``max_memory``, each kept GPU is capped at what accelerate finds free on it.
        """
        caps = self.max_memory
        if caps is None:
            from accelerate.utils import get_max_memory

            caps = get_max_memory()

        def gpu_index(key: Any) -> int | None:
            if isinstance(key, int):
                return key
            if isinstance(key, str) and key.startswith("cuda:") and key[5:].isdigit():
                return int(key[5:])
            return None

        kept = {k: v for k, v in caps.items() if gpu_index(k) in gpus or (gpu_index(k) is None and k != "mps")}
        if not any(gpu_index(k) is not None for k in kept):
            raise ModelError(f"--max-memory gives none of this rank's GPUs {gpus} any memory")
        return dataclasses.replace(self, device=f"cuda:{gpus[0]}", max_memory=kept)


#: device types hermes-lab places models on (``auto``: a GPU when there is one, resolved per rank)
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def _accelerators() -> list[str]:
    """The accelerators this process can use, as device strings (for messages)."""
    import torch

    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        found += [f"xpu:{i}" for i in range(torch.xpu.device_count())]
    return found


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; any other name unchanged."""
    import torch

    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str, what: str = "--device", allow_auto: bool = True) -> str:
    """``name`` if a model can be placed there on this machine; ModelError saying why not (and what is here).

    Refused: a name torch does not know, a device type that cannot hold a model's data (``meta``) or that
    hermes-lab does not place models on, an accelerator this machine does not have, an index past the last
    device of its type.
    """
    import torch

    here = ", ".join(["cpu", *_accelerators()])
    if allow_auto and name == "auto":
        return name
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ModelError(f"{what} {name!r} is not a device; use one of: {here}"
                         + (" (or auto)" if allow_auto else "")) from None
    if device.type == "meta":
        raise ModelError(f"{what} meta holds no data (shapes only), so no model can run there; use one of: {here}")
    if device.type not in DEVICE_TYPES:
        raise ModelError(f"{what} {name!r}: hermes-lab places models on {', '.join(DEVICE_TYPES)} devices only; "
                         f"this machine has: {here}")
    if device.type == "cpu":
        if device.index not in (None, 0):
            raise ModelError(f"{what} {name!r}: there is one CPU device, cpu (or cpu:0)")
        return name
    available = {"cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
                 "xpu": hasattr(torch, "xpu") and torch.xpu.is_available()}[device.type]
    if not available:
        build = f" (torch {torch.__version__} is built without CUDA)" if device.type == "cuda" and \
            torch.version.cuda is None else ""
        raise ModelError(f"{what} {name}: no {device.type} device is available on this machine{build}; "
                         f"available: {here}")
    count = {"cuda": torch.cuda.device_count, "xpu": lambda: torch.xpu.device_count(), "mps": lambda: 1}
    if device.index is not None and device.index >= count[device.type]():
        raise ModelError(f"{what} {name}: this machine has {count[device.type]()} {device.type} device(s); "
                         f"available: {here}")
    return name


def parse_device_map(text: str | None) -> str | dict[str, Any] | None:
    """``--device-map``: a strategy name, or a JSON file of ``{module name: device}``."""
    if text is None or text == "":
        return None
    if text in STRATEGIES:
        return text
    path = Path(text)
    if not path.is_file():
        raise ModelError(f"--device-map takes {', '.join(STRATEGIES)} or a JSON file; {text!r} is neither")
    data = read_json(path, ModelError, "--device-map", expect=dict)
    if not data or not all(isinstance(k, str) for k in data):
        raise ModelError(f"--device-map {path} must hold a JSON object of module name -> device")
    for module, device in data.items():
        # accelerate's spellings: a GPU index, a device string, or "disk"
        if isinstance(device, bool) or not isinstance(device, (int, str)):
            raise ModelError(f"--device-map {path}: {module!r} -> {device!r} is not a device")
        if device != "disk":
            check_device(f"cuda:{device}" if isinstance(device, int) else device,
                         f"--device-map {path}: {module!r} ->", allow_auto=False)
    return data


def parse_max_memory(text: str | None) -> dict[Any, Any] | None:
    """``--max-memory 0=20GiB,1=20GiB,cpu=64GiB`` -> ``{0: "20GiB", 1: "20GiB", "cpu": "64GiB"}``."""
    if text is None or text == "":
        return None
    caps: dict[Any, Any] = {}
    for part in text.split(","):
        key, sep, size = part.partition("=")
        key = key.strip()
        if not sep or not key or not _SIZE.match(size):
            raise ModelError(f"--max-memory takes DEVICE=SIZE pairs such as 0=20GiB,cpu=64GiB; got {part!r}")
        caps[int(key) if key.isdigit() else key] = size.strip()
    return caps


def placement_from_options(device: str, device_map: str | None, max_memory: str | None,
                           offload_folder: str | Path | None) -> Placement:
    """A :class:`Placement` from the CLI's ``--device``, ``--device-map``, ``--max-memory``, ``--offload-folder``."""
    check_device(device)
    if offload_folder is not None:
        check_output(offload_folder, False, ModelError, what="--offload-folder", resumable=True)
    placement = Placement(device=device, device_map=parse_device_map(device_map),
                          max_memory=parse_max_memory(max_memory),
                          offload_folder=None if offload_folder is None else str(offload_folder))
    if placement.offload_folder is not None and not placement.mapped:
        raise ModelError("--offload-folder holds weights a --device-map sends to disk; give a --device-map too")
    return placement


def dispatch(model: torch.nn.Module, placement: Placement, dtype: torch.dtype | None = None) -> None:
    """Spread a built model over ``placement``'s device map (accelerate's ``dispatch_model``)."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = list(getattr(model, "_no_split_modules", None) or [])
    device_map = placement.device_map
    if isinstance(device_map, str):
        max_memory = placement.max_memory
        if device_map != "sequential":
            max_memory = get_balanced_memory(model, max_memory=max_memory, no_split_module_classes=no_split,
                                             dtype=dtype, low_zero=device_map == "balanced_low_0")
        device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split,
                                           dtype=dtype)
    if "disk" in device_map.values() and placement.offload_folder is None:
        raise ModelError("the device map offloads to disk; give an offload folder (--offload-folder DIR)")
    try:
        dispatch_model(model, device_map=device_map, offload_dir=placement.offload_folder)
    except (ValueError, KeyError, RuntimeError) as e:
        raise ModelError(f"cannot place the model with this device map: {e}") from None


def from_pretrained_kwargs(placement: Placement) -> dict[str, Any]:
    """What ``from_pretrained`` takes for this placement (nothing when there is no device map)."""
    if not placement.mapped:
        return {}
    kwargs: dict[str, Any] = {"device_map": placement.device_map}
    if placement.max_memory is not None:
        kwargs["max_memory"] = placement.max_memory
    if placement.offload_folder is not None:
        kwargs["offload_folder"] = placement.offload_folder
    return kwargs


def devices_of(model: torch.nn.Module) -> list[str]:
    """The devices holding the model's weights (``"meta"`` for weights offloaded to disk), sorted."""
    return sorted({str(p.device) for p in model.parameters()})


__all__ = ["DEVICE_TYPES", "STRATEGIES", "Placement", "check_device", "devices_of", "dispatch",
           "from_pretrained_kwargs", "parse_device_map", "parse_max_memory", "resolve_device",
           "placement_from_options"]
