"""Model names -> adapters.

Accepted names:

* ``embedded``: the small video LM trained here from scratch (CPU default);
* ``embedded-smollm2``: SmolLM2-135M-Instruct + its trained vision front end;
* ``tiny-*``: random-init miniatures of each family (tests, demos);
* ``planted:SEED[,family=F,strength=S]``: a miniature whose heads have memory roles set in
  its weights (:mod:`~hermes_policy.models.planted`), for calibrating a study;
* a directory written by ``hermes-lab train-embedded`` (``RUN/final``);
* any HF hub id or local directory of a supported architecture, loaded with
  ``from_pretrained`` and never with ``trust_remote_code`` unless asked.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hermes_policy.errors import ModelError
from hermes_policy.models.base import ModelAdapter
from hermes_policy.models.configured import CONFIG_PREFIX, build_config_model
from hermes_policy.models.families import SUPPORTED_ARCHITECTURES as _FAMILY_LABELS
from hermes_policy.models.families import family_of
from hermes_policy.models.placement import Placement, check_device, dispatch, from_pretrained_kwargs, resolve_device
from hermes_policy.models.planted import PLANTED_PREFIX
from hermes_policy.models.scratch import is_scratch_dir, load_scratch
from hermes_policy.models.tiny import TINY_MODELS, build_tiny

#: ``--dtype`` names -> torch dtypes (``auto``: the checkpoint's own)
DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype | None:
    """The torch dtype a ``--dtype`` name stands for; an unknown name raises ModelError."""
    if name not in DTYPES:
        raise ModelError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


#: model_type in a checkpoint's config.json -> the family that loads it (read off the family table)
SUPPORTED_ARCHITECTURES = dict(_FAMILY_LABELS)


def _builtin() -> dict[str, Callable[[torch.dtype | None], ModelAdapter]]:
    from hermes_policy.models.embedded import load_embedded, load_embedded_smollm2

    table: dict[str, Callable[[torch.dtype | None], ModelAdapter]] = {
        "embedded": lambda dtype: load_embedded(dtype or torch.float32),
        "embedded-smollm2": lambda dtype: load_embedded_smollm2(dtype or torch.bfloat16),
    }
    for name in TINY_MODELS:
        table[name] = lambda dtype, name=name: build_tiny(name, dtype or torch.float32)
    return table


BUILTIN_MODELS = ("embedded", "embedded-smollm2", *TINY_MODELS)


def supported_help() -> str:
    families = ", ".join(f"{v} ({k})" for k, v in SUPPORTED_ARCHITECTURES.items())
    return (f"built-in names: {', '.join(BUILTIN_MODELS)}, planted:SEED[,family=...], config:NAME; "
            f"or a HF id/path of: {families}")


def load_model(
    name: str,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
    placement: Placement | None = None,
    allow_pickle: bool = False,
) -> ModelAdapter:
    """Load a model by built-in name, HF hub id, or local path.

    Args:
        placement: a device map over GPUs, CPU and disk (:mod:`hermes_policy.models.placement`);
            None: everything on ``device``.
        allow_pickle: a checkpoint may load pickle weights (``pytorch_model.bin``); unpickling can run code
            from the file. Off: safetensors only, and a pickle-only checkpoint is refused by name.

    Raises:
        ModelError: unknown name, unreachable checkpoint, unsupported architecture, or an impossible placement.
    """
    placement = placement if placement is not None else Placement(device=str(device))
    if not placement.mapped:
        placement = dataclasses.replace(placement, device=resolve_device(placement.device))
        check_device(placement.device, "device", allow_auto=False)  # before a (slow) build, not at .to()
    builtin = _builtin()
    if name.startswith(CONFIG_PREFIX):
        # built where it will run, in its dtype: a full-size model never passes through fp32 or another device
        target = placement.device if not placement.mapped else "cpu"
        adapter = build_config_model(name, dtype, "cpu" if target == "auto" else target)
    elif name.startswith(PLANTED_PREFIX):
        from hermes_policy.models.planted import build_planted, parse_planted_name

        adapter = build_planted(parse_planted_name(name), dtype or torch.float32)
    elif name in builtin:
        adapter = builtin[name](dtype)
    elif is_scratch_dir(name):  # a `train-embedded` run's final/ or checkpoint/ directory
        adapter = load_scratch(name, str(name), dtype or torch.float32)
    else:
        adapter = load_pretrained(name, dtype=dtype, trust_remote_code=trust_remote_code, placement=placement,
                                  allow_pickle=allow_pickle)
        if placement.mapped:  # from_pretrained placed it; moving it now would undo that
            return adapter
    if placement.mapped:
        dispatch(adapter.model, placement, dtype)
    else:
        adapter.model.to(placement.device)
    if hasattr(adapter, "frontend"):
        adapter.frontend.to(adapter.device)  # beside the embeddings it feeds
    return adapter


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be used now, or None: ``HF_HUB_OFFLINE`` is set, or its host does
    not answer within 3 s. Checked once before going online, so that a machine without network says so at
    once instead of after the hub client's retries (five of them, half a minute)."""
    import socket
    from urllib.parse import urlparse

    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = urlparse(hub.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=3).close()
    except OSError as e:
        return f"{url.hostname} cannot be reached ({e.strerror or e})"
    return None


def _read_config(name: str, trust_remote_code: bool) -> tuple[Any, bool]:
    """The checkpoint's config, and whether its files come from the local cache only (the hub is not used)."""
    from transformers import AutoConfig

    local = Path(name).exists()
    if not local and not _looks_like_hub_id(name):
        raise ModelError(f"unknown model {name!r}: not a built-in name, an existing path or an 'org/name' hub id. "
                         f"{supported_help()}")
    offline = local
    if not local:
        try:  # a model in the local Hugging Face cache needs no network
            return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, local_files_only=True), True
        except Exception:  # noqa: BLE001  (not cached: try the hub, if it can be reached)
            why = _hub_unreachable()
            if why is not None:
                raise ModelError(f"cannot load model {name!r}: it is not in the local Hugging Face cache and the "
                                 f"hub cannot be used ({why}); pass a local path, or a built-in name. "
                                 f"{supported_help()}") from None
    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code), offline
    except Exception as e:  # transformers raises OSError/ValueError/HF errors; all mean "cannot load"
        where = "local directory" if local else "built-in name, local path or reachable hub id"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load model {name!r}: not a {where} ({reason}). {supported_help()}") from None


#: weight files that are pickles: ``torch.load`` unpickles them, which can run code from the file
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
PICKLE_OPT_IN = "--allow-pickle-weights"


def _refuse_pickle_only(name: str) -> None:
    """A local checkpoint with pickle weights and no safetensors is refused, naming the file and the opt-in."""
    folder = Path(name)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelError(f"model {name!r} has pickle weights only ({', '.join(pickles[:3])}"
                         f"{', ...' if len(pickles) > 3 else ''}) and no safetensors: unpickling can run code from "
                         f"the file, so it is not loaded unless you pass {PICKLE_OPT_IN} (only for a checkpoint you "
                         "trust), or convert it to safetensors")


def load_pretrained(name: str, dtype: torch.dtype | None = None, trust_remote_code: bool = False,
                    placement: Placement | None = None, allow_pickle: bool = False) -> ModelAdapter:
    """A real checkpoint: read its config first so unsupported ones fail before any weight loads.

    Weights load from safetensors only unless ``allow_pickle``.
    """
    config, cached = _read_config(name, trust_remote_code)
    model_type = getattr(config, "model_type", None)
    family = family_of(model_type)
    if family is None:
        raise ModelError(f"model {name!r} has architecture {model_type!r}, which is not supported; {supported_help()}")
    if not allow_pickle:
        _refuse_pickle_only(name)
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    # a local folder, or a checkpoint found in the cache: nothing more is fetched
    kwargs = dict(trust_remote_code=trust_remote_code, **({"local_files_only": True} if cached else {}))
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            name, dtype=dtype or "auto", attn_implementation="sdpa", **kwargs,
            # True: safetensors or nothing (a hub repo with only pytorch_model.bin fails instead of unpickling)
            use_safetensors=None if allow_pickle else True,
            **from_pretrained_kwargs(placement or Placement()),
        )
        tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
        processor = AutoImageProcessor.from_pretrained(name, **kwargs)
    except (OSError, ValueError, pickle.UnpicklingError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, pickle.UnpicklingError):  # torch's weights-only unpickler met more than tensors
            reason = "its pickle weights are not a plain tensor file, and torch's weights-only loader refused them"
        if not allow_pickle and "safetensors" in reason:
            reason += f" (pickle weights, if it has them, load only with {PICKLE_OPT_IN})"
        raise ModelError(f"cannot load the weights, tokenizer or image processor of {name!r}: {reason}") from None
    return family.wrap(name, model, tokenizer, processor)
