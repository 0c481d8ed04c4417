"""The from-scratch embedded model: BPE tokenizer, save/load, the training loop, and what ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_training import TINY, _tiny_train_config

from analysis.training_curves import plot_curve
from hermes_policy.errors import ModelError
from hermes_policy.models import embedded
from hermes_policy.models.byte_tokenizer import bpe_tokenizer
from hermes_policy.models.scratch import ScratchConfig, build_scratch, is_scratch_dir, load_scratch, save_scratch
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.training import TrainConfig, tokenizer_corpus, train
from hermes_policy.video import open_video


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
    # the CLI hands train() the plotter from analysis (the runtime may not import analysis)
    train(_tiny_train_config(qa_steps=3), run, resume=True, progress=False, plot=plot_curve)
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


# ------------------------------------------------------------- packed streams
def _packed_setup(tokenizer, gap_share: float):
    import random

    from hermes_policy.training import Batcher, qa_sample

    model, frontend = build_scratch(TINY, tokenizer, seed=0)
    model.eval()
    cfg = _tiny_train_config(branches=5, gap_share=gap_share, min_clip=6, max_clip=6, caption_share=0.3)
    sample = qa_sample(random.Random(1), cfg)
    return model, Batcher(model, tokenizer, frontend), sample


@pytest.mark.parametrize("gap_share", [0.0, 1.0])
@torch.no_grad()
def test_each_packed_branch_matches_its_own_unpacked_forward(tokenizer, gap_share: float) -> None:
    """The oracle for packing: a branch sees exactly its prefix of the stream, at the session's positions."""
    from hermes_policy.training import Sample

    model, batcher, sample = _packed_setup(tokenizer, gap_share)
    assert len(sample.branches) == 5 and (sample.gaps is not None) == bool(gap_share)
    assert len({b.frame for b in sample.branches}) > 1
    packed = batcher([sample])
    stream = packed.positions[0, : packed.spans[0][0][0]]
    tokens = TINY.grid ** 2
    gaps = torch.tensor(sample.gaps or [0] * len(sample.frames))
    frame_starts = stream[-len(sample.frames) * tokens::tokens]
    assert torch.equal(frame_starts.diff(), tokens + gaps[1:])  # the gaps land between frames, as drawn
    logits = model(**packed.model_inputs()).logits[0]
    for branch, (lo, hi) in zip(sample.branches, packed.spans[0]):
        alone = batcher([Sample(sample.frames[: branch.frame + 1], [branch], sample.gaps)])
        (a_lo, a_hi), = alone.spans[0]
        assert torch.equal(alone.positions[0, a_lo:a_hi], packed.positions[0, lo:hi])
        assert torch.equal(alone.labels[0, a_lo:a_hi], packed.labels[0, lo:hi])
        ref = model(**alone.model_inputs()).logits[0, a_lo:a_hi]
        torch.testing.assert_close(logits[lo:hi], ref, atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_an_unpacked_sample_is_the_plain_causal_forward(tokenizer) -> None:
    """One branch, no gaps: the 4-D mask and positions must reduce to what the session runs."""
    model, batcher, sample = _packed_setup(tokenizer, 0.0)
    from hermes_policy.training import Sample

    one = batcher([Sample(sample.frames, sample.branches[-1:])])
    plain = model(inputs_embeds=one.embeds).logits
    torch.testing.assert_close(model(**one.model_inputs()).logits, plain, atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_a_padded_row_gives_the_same_logits_as_alone(tokenizer) -> None:
    import random

    from hermes_policy.training import qa_sample

    model, batcher, sample = _packed_setup(tokenizer, 1.0)
    other = qa_sample(random.Random(7), _tiny_train_config(branches=2, min_clip=2, max_clip=2))
    both = batcher([sample, other])
    alone = batcher([other])
    n = alone.embeds.shape[1]
    assert both.embeds.shape[1] > n
    torch.testing.assert_close(model(**both.model_inputs()).logits[1, :n], model(**alone.model_inputs()).logits[0],
                               atol=2e-5, rtol=1e-4)


def test_packed_training_continues_from_another_runs_weights(tmp_path: Path) -> None:
    """--init-from: the LM and front end start where the other run ended; only the QA stage runs."""
    from safetensors.torch import load_file

    base = train(_tiny_train_config(qa_steps=1), tmp_path / "base", progress=False)
    cfg = _tiny_train_config(vision_steps=0, align_steps=0, qa_steps=1, branches=4, gap_share=1.0, min_clip=3,
                             init_from=str(base), eval_lengths=(4,))
    run = tmp_path / "more"
    final = train(cfg, run, progress=False)
    rows = [json.loads(line) for line in (run / "curve.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["qa"]
    start, end = load_file(base / "model.safetensors"), load_file(final / "model.safetensors")
    changed = [k for k in start if not torch.equal(start[k], end[k])]
    # one small step from the base: weights move, but only a little (a fresh init would be far away)
    assert changed and all((start[k].float() - end[k].float()).abs().max() < 0.05 for k in start)


def test_train_config_rejects_impossible_packing() -> None:
    with pytest.raises(ValueError, match="branches"):
        TrainConfig(branches=0)
    with pytest.raises(ValueError, match="category_weights"):
        TrainConfig(category_weights={"backward": 1.0, "trivia": 1.0})
    with pytest.raises(ValueError, match="init_from"):
        TrainConfig(init_from="/no/such/model")


@pytest.mark.parametrize("hard", [0.0, 1.0])
def test_hard_backward_questions_cannot_be_read_off_the_current_frame(hard: float) -> None:
    import random

    from hermes_policy.data.questions import questions_at
    from hermes_policy.training.samples import _branch, _clip, on_screen

    cfg = _tiny_train_config(category_weights={"real-time": 1e-9, "backward": 1.0}, hard_backward=hard, mc_share=0.0)
    rng = random.Random(3)
    shown = avoidable = asked = 0
    for _ in range(150):
        log = _clip(rng, cfg, 16).events
        frame = rng.randrange(8, 16)
        branch = _branch(rng, cfg, log, frame, caption_share=0.0)
        if branch.category != "backward":
            continue
        asked += 1
        screen = on_screen(log.state_at(frame))
        # answers do not depend on the rng (only the option order does)
        answers = {q.answer_text for q in questions_at(log, frame, random.Random(0), categories=("backward",))}
        if branch.target in screen:
            shown += 1
            avoidable += bool(answers - screen)
    assert asked > 100 and shown > 0
    if hard:
        assert avoidable == 0  # an on-screen answer only where every backward question has one
    else:
        assert avoidable > 0.2 * asked  # the shortcut the hard share removes is common


def test_train_config_rejects_a_hard_share_outside_zero_one() -> None:
    with pytest.raises(ValueError, match="hard_backward"):
        _tiny_train_config(hard_backward=1.5)


def test_install_replaces_the_weights_and_keeps_the_model_card(tmp_path: Path) -> None:
    from hermes_policy.training import install_model

    final, target = tmp_path / "final", tmp_path / "weights"
    final.mkdir()
    target.mkdir()
    (final / "model.safetensors").write_bytes(b"new")
    (final / "state.pt").write_bytes(b"optimiser")
    (target / "model.safetensors").write_bytes(b"old")
    (target / "stale.json").write_text("{}")
    (target / "MODEL_CARD.md").write_text("card")
    (target / "learning_curve.png").write_bytes(b"png")
    install_model(final, target)
    assert sorted(p.name for p in target.iterdir()) == ["MODEL_CARD.md", "learning_curve.png", "model.safetensors"]
    assert (target / "model.safetensors").read_bytes() == b"new"

    from hermes_policy.models.frontend import mc_scoring

    (final / "frontend.json").write_text(json.dumps({"kind": "conv", "training": {"mc_answer": "word-letter"}}))
    install_model(final, target, mc_scoring="cloze")
    assert mc_scoring(target) == "cloze" and mc_scoring(final) == "word-letter"
    with pytest.raises(ValueError, match="mc_scoring"):
        install_model(final, target, mc_scoring="vote")


@pytest.mark.slow
def test_the_shipped_model_answers_from_memory() -> None:
    """What ships as ``embedded``, scored as it declares, on held-out streams twice the longest training clip:
    well above chance (0.25) with the full cache, and backward falls when only the start and the recent
    window are kept. Fails if the weights, the scorer or the streaming path break."""
    from hermes_policy.data import synthesize
    from hermes_policy.eval import PolicyRecipe, evaluate
    from hermes_policy.models import load_model

    adapter = load_model("embedded")
    items = synthesize(seed=2027, videos=6, frames=64, per_category=2)
    result = evaluate(adapter, items, [PolicyRecipe("full"), PolicyRecipe("sink-window", budget_ratio=0.3)],
                      progress=False)
    full = {c: result.accuracy("full", c) for c in ("real-time", "backward")}
    assert min(full.values()) >= 0.75, full
    assert result.accuracy("sink-window@0.3", "backward") <= full["backward"] - 0.3


def test_resume_refuses_a_checkpoint_missing_its_files(tmp_path: Path) -> None:
    """A checkpoint folder holding only the optimiser state is not taken as complete."""
    from hermes_lab.cli import main

    ckpt = tmp_path / "run" / "checkpoint"
    ckpt.mkdir(parents=True)
    torch.save({"step": 3}, ckpt / "state.pt")
    code = main(["train-embedded", "--run-dir", str(tmp_path / "run"), "--resume", "--vision-steps", "1",
                 "--align-steps", "1", "--qa-steps", "1"])
    assert code == 2
    assert sorted(p.name for p in ckpt.iterdir()) == ["state.pt"]  # left as it was
