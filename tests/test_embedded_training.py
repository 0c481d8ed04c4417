"""The from-scratch embedded model: BPE tokenizer, save/load, the training loop, and what ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hermes_policy.errors import ModelError
from hermes_policy.models import embedded
from hermes_policy.models.byte_tokenizer import bpe_tokenizer
from hermes_policy.models.scratch import ScratchConfig, build_scratch, is_scratch_dir, load_scratch, save_scratch
from hermes_policy.models.train_embedded import TrainConfig, tokenizer_corpus, train
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import open_video

TINY = ScratchConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=400)


def _tiny_train_config(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(vision_steps=1, align_steps=1, qa_steps=2, batch_size=2, max_clip=4, eval_every=2,
                                 eval_questions=2, eval_lengths=(3,), checkpoint_every=2, tokenizer_corpus=40,
                                 scratch=TINY), **kw})


@pytest.fixture(scope="module")
def tokenizer():
    return bpe_tokenizer(tokenizer_corpus(_tiny_train_config()), 400)


def test_bpe_tokenizer_round_trips_any_text_and_shortens_the_corpus(tokenizer) -> None:
    for text in ("What colour is the circle now?", "naïve ☃ café\n\tdone", "<|im_start|>user\nhi<|im_end|>"):
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text
    question = "What colour was the first shape that appeared?"
    assert len(tokenizer(question).input_ids) < len(question.encode()) / 3  # merges learned from the corpus
    assert len(tokenizer("<|im_end|>").input_ids) == 1
    assert len(tokenizer) <= 400


def test_bpe_tokenizer_rejects_a_vocabulary_without_room_for_bytes() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        bpe_tokenizer(["abc"], 100)


def test_tokenizer_corpus_is_a_function_of_the_config() -> None:
    assert tokenizer_corpus(_tiny_train_config()) == tokenizer_corpus(_tiny_train_config())
    assert tokenizer_corpus(_tiny_train_config()) != tokenizer_corpus(_tiny_train_config(seed=1))


def test_saved_scratch_model_loads_with_bf16_weights(tokenizer, tmp_path: Path) -> None:
    model, frontend = build_scratch(TINY, tokenizer, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    save_scratch(model, tokenizer, frontend, tmp_path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # saving must not round the masters
    assert is_scratch_dir(tmp_path)
    adapter = load_scratch(tmp_path, "x")
    for k, v in adapter.model.state_dict().items():
        torch.testing.assert_close(v, before[k].to(torch.bfloat16).float())
    assert adapter.tokenizer.decode(adapter.tokenizer("red circle").input_ids) == "red circle"
    assert adapter.model.config.rope_parameters["rope_theta"] == TINY.rope_theta


def test_scratch_config_validates() -> None:
    with pytest.raises(ValueError):
        ScratchConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError):
        ScratchConfig(rope_theta=1.0)
    with pytest.raises(ValueError, match="backbone"):
        TrainConfig(backbone="gpt5")


def test_training_logs_a_curve_resumes_and_yields_a_streamable_model(tmp_path: Path) -> None:
    run = tmp_path / "run"
    final = train(_tiny_train_config(qa_steps=1), run, progress=False)
    rows = [json.loads(line) for line in (run / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and [r["stage"] for r in rows] == ["vision", "align", "qa"]
    evaluation = rows[1]["eval"][0]
    assert evaluation["n"] == 2 and evaluation["frames"] == 3
    assert all(0 <= v <= 1 for k, v in evaluation.items() if k not in ("n", "frames"))
    # resume: the last checkpoint (the final step, 3) is picked up and only the missing steps run
    train(_tiny_train_config(qa_steps=3), run, resume=True, progress=False)
    rows = [json.loads(line) for line in (run / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert (run / "curve.png").stat().st_size > 1000
    adapter = load_scratch(final, "trained")
    session = StreamingSession(adapter, config=SessionConfig(chunk_frames=2))
    session.ingest(open_video("synthetic:seed=3,frames=4").frames())
    answer = session.ask("What colour is the circle now?", options=["red", "blue", "green", "white"])
    assert isinstance(answer.answer, str) and answer.ttft_ms > 0


def test_same_seed_same_model(tmp_path: Path) -> None:
    a = train(_tiny_train_config(qa_steps=1), tmp_path / "a", progress=False)
    b = train(_tiny_train_config(qa_steps=1), tmp_path / "b", progress=False)
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_missing_embedded_weights_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(embedded, "EMBEDDED_DIR", tmp_path / "nothing")
    with pytest.raises(ModelError, match="train-embedded --install"):
        embedded.load_embedded()


def test_concept_bottleneck_pixels_are_frozen_after_stage_zero(tmp_path: Path) -> None:
    from hermes_policy.models.frontend import load_frontend

    run = tmp_path / "run"
    train(_tiny_train_config(vision_steps=1, align_steps=0, qa_steps=0, checkpoint_every=1), run, progress=False)
    after_vision = load_frontend(run / "checkpoint")
    train(_tiny_train_config(vision_steps=1, align_steps=1, qa_steps=2, checkpoint_every=1), run, resume=True,
          progress=False)
    final = load_frontend(run / "final")
    before, after = after_vision.state_dict(), final.state_dict()
    frozen = {k for k in before if k.split(".")[0] in ("encoder", "pixel_mlp", "conv_proj", "concept_head")}
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["readout.0.weight"], after["readout.0.weight"])  # the readout did learn


def test_a_training_run_directory_loads_by_path(tmp_path: Path) -> None:
    from hermes_policy.models import load_model

    final = train(_tiny_train_config(qa_steps=1), tmp_path / "run", progress=False)
    adapter = load_model(str(final))
    assert adapter.frontend.config.concepts == 10 and adapter.model.config.num_hidden_layers == TINY.num_layers
