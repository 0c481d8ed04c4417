"""A training configuration small enough for tests: a 2-layer scratch model, a few steps of each stage."""

from __future__ import annotations

from hermes_policy.models.scratch import ScratchConfig
from hermes_policy.training import TrainConfig

TINY = ScratchConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=400)


def _tiny_train_config(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(vision_steps=1, align_steps=1, qa_steps=2, batch_size=2, max_clip=4, eval_every=2,
                                 eval_questions=2, eval_lengths=(3,), checkpoint_every=2, tokenizer_corpus=40,
                                 scratch=TINY), **kw})
