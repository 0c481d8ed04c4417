"""Scratch only (never in the project): import the HERMES release's own modules unchanged.

transformers 4.44.2 (the Qwen2 rotary API the release calls: rotary_emb(x, seq_len=...)) is on sys.path first;
the two model classes the release subclasses do not exist in 4.44.2 and are stubbed as plain nn.Modules
(none of the functions run here touch them). logzero is stubbed with the stdlib logger.
"""
import os

#: the scratch folder outside the project: src/<owner+repo> (git archive of each mirror), tf444, out
SCRATCH = os.environ.get("CONFORMANCE_SCRATCH", "/tmp/conf")

import logging
import sys
import types

sys.path.insert(0, os.path.join(SCRATCH, "tf444"))
import torch
import transformers

for name in ("LlavaOnevisionForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"):
    if not hasattr(transformers, name):
        setattr(transformers, name, type(name, (torch.nn.Module,), {}))
lz = types.ModuleType("logzero")
lz.logger = logging.getLogger("release")
sys.modules["logzero"] = lz
q25 = types.ModuleType("transformers.models.qwen2_5_vl.modeling_qwen2_5_vl")
q25.apply_multimodal_rotary_pos_emb = None
sys.modules["transformers.models.qwen2_5_vl"] = types.ModuleType("transformers.models.qwen2_5_vl")
sys.modules["transformers.models.qwen2_5_vl.modeling_qwen2_5_vl"] = q25
import transformers.modeling_flash_attention_utils as fau

if not hasattr(fau, "prepare_fa_kwargs_from_position_ids"):
    fau.prepare_fa_kwargs_from_position_ids = lambda *a, **k: None

for name in ("LlavaOnevisionForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"):
    if name not in transformers.__dict__:
        setattr(transformers, name, type(name, (torch.nn.Module,), {}))
sys.path.insert(0, os.path.join(SCRATCH, "src", "azaj01+HERMES"))
from inference import llavaov_hermes, reindex_1d  # noqa: F401
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding  # noqa: F401


def stub_missing() -> None:
    tf = sys.modules["transformers"]
    for name in ("LlavaOnevisionForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"):
        if name not in tf.__dict__:
            setattr(tf, name, type(name, (torch.nn.Module,), {}))


stub_missing()
from inference import qwenvl_hermes  # noqa: F401
