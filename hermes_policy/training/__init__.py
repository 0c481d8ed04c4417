"""Training the embedded model (``hermes-lab train-embedded``).

Two backbones, one recipe, on synthetic streams whose ground truth is known:

* ``scratch`` (what ships as ``embedded``): a ~5M-parameter Llama with its own
  BPE tokenizer (:mod:`~hermes_policy.models.scratch`), trained jointly with
  its :class:`ConvFrontend`;
* ``smollm2`` (``embedded-smollm2``): SmolLM2-135M-Instruct frozen (bf16), only
  the front end learns, LLaVA-style.

Three stages, because one answer letter per sample is far too little signal:

0. ``vision``: the front end alone learns which colours and shapes have their
   centre in each grid cell (multi-label, dense: every token is supervised).
   The scratch model's front end is a concept bottleneck, so these logits are
   what the LM reads, and the pixel encoder is frozen after this stage; the
   SmolLM2 front end learns them through a throw-away head. Without this stage
   the front end learned to see only slowly through the LM's loss (after 500
   steps of captioning and QA, captions still named the wrong colours).

1. ``align``: one frame, "Describe the current frame." -> a dense caption
   ("red circle top left, blue square bottom right."), loss on every caption token.
   Single frames make a copy-from-the-previous-frame shortcut impossible.
2. ``qa``: clips of mixed length, a question at the end in the exact prompt
   layout the streaming session uses (system prefix, frames, question), answered
   by the word ("red") or, for multiple choice, by the letter; half the batch
   keeps captioning the current frame so alignment is not forgotten, at a lower
   learning rate.

Everything is seeded; a checkpoint (front end, optimiser, step, RNG states) is
written every ``checkpoint_every`` steps and ``--resume`` continues from the
latest. The learning curve goes to ``curve.jsonl`` in the run directory (and, at
the end, ``curve.png``, drawn by the plotter the caller passes: ``analysis`` owns it).

Modules: :mod:`.config` (:class:`TrainConfig`), :mod:`.samples` (what is trained on),
:mod:`.batching` (samples to packed model inputs), :mod:`.loop` (:func:`train` and the
in-training evaluation), :mod:`.checkpoint`, :mod:`.install` and :mod:`.cli`.
"""

from hermes_policy.training.batching import Batch, Batcher
from hermes_policy.training.checkpoint import has_checkpoint, restore_checkpoint, write_checkpoint
from hermes_policy.training.config import BACKBONES, TrainConfig
from hermes_policy.training.install import check_mc_scoring, install_model
from hermes_policy.training.loop import CurvePlotter, TrainingRun, answer_logits, quick_eval, train
from hermes_policy.training.samples import (
    CAPTION_QUESTION,
    MATCH_QUESTION,
    Branch,
    Sample,
    align_sample,
    caption,
    cell_targets,
    mc_target,
    on_screen,
    qa_sample,
    tokenizer_corpus,
    vision_batch,
)

__all__ = [
    "BACKBONES",
    "CAPTION_QUESTION",
    "MATCH_QUESTION",
    "Batch",
    "Batcher",
    "Branch",
    "CurvePlotter",
    "Sample",
    "TrainConfig",
    "TrainingRun",
    "align_sample",
    "answer_logits",
    "caption",
    "cell_targets",
    "check_mc_scoring",
    "has_checkpoint",
    "install_model",
    "mc_target",
    "on_screen",
    "qa_sample",
    "quick_eval",
    "restore_checkpoint",
    "tokenizer_corpus",
    "train",
    "vision_batch",
    "write_checkpoint",
]
