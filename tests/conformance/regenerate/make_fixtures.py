# ruff: noqa: ISC004, SIM115 -- a scratch tool run outside the project, by hand
"""Scratch only: gather SCRATCH/out into hermes-lab's conformance fixtures, each with its provenance."""
import os

#: the scratch folder outside the project: src/<owner+repo> (git archive of each mirror), tf444, out
SCRATCH = os.environ.get("CONFORMANCE_SCRATCH", "/tmp/conf")

import json
import os
import sys

from safetensors.torch import load_file, save_file

OUT = os.path.join(SCRATCH, "out")
DEST = sys.argv[1]
HERMES = {"repo": "azaj01/HERMES", "commit": "8d699b16a6bedb9086c1b39ec4253c6a1d1ce789",
          "same_code_in": {"repo": "haowei-freesky/HERMES", "commit": "b505d95f5f99a863bb3af0a6e86f41a101245213",
                           "files": ["inference/llavaov_online_official.py", "inference/reindex_1d_official.py"],
                           "note": "the pruning functions below are line for line the same there, except the "
                                   "later file's `streaming` switch (eager compaction offline)"}}
ROTARY = ("transformers 4.44.2 Qwen2RotaryEmbedding (the rotary_emb(x, seq_len=...) API the release calls; "
          "its requirements pin transformers git 66bc4def, which is not installable here)")


def hermes():
    scenarios, tensors = {}, {}
    for name in ("lazy", "eager", "ties", "exact", "tiny", "roomy", "unequal"):
        meta = json.load(open(f"{OUT}/hermes_{name}.json"))
        scenarios[name] = meta
        for k, v in load_file(f"{OUT}/hermes_{name}.safetensors").items():
            tensors[f"{name}/{k}"] = v
    doc = {
        "fixture": "hermes-lab conformance: HERMES as released (LLaVA-OneVision online inference, 1-D RoPE)",
        "how": "run, not read: the release's own methods were called unchanged on these inputs, on CPU, float32, "
               "torch 2.13.0, outside hermes-lab (tests/conformance/regenerate/hermes_run.py)",
        "source": {**HERMES, "files": {
            "inference/llavaov_hermes.py": [
                "LlavaOneVision_Hermes.prune_kv_cache_by_attention (scores: the argument of each torch.topk call, "
                "observed; keep_rows: its return value)",
                "LlavaOneVision_Hermes.apply_kv_cache_pruning_strict -> _shrink_positions_and_rerotate_keys "
                "(positions_after, final keys/values)",
                "LlavaOneVision_Hermes._get_next_start_pos_per_layer / _append_position_ids (start_positions)",
                "load_model (short_term_ratio 0.1, long_term_ratio 0.3; the thresholds int(L*0.1), int(L*(1-0.3)))",
            ],
            "inference/reindex_1d.py": ["compute_cos_sin_for_positions", "apply_rotary_pos_emb_1d", "rotary_delta"],
            "video_qa/hermes_vqa.py": ["HermesVQA.analyze_a_video (encode a chunk, then predict_and_compress: "
                                       "pseudo_forward, prune when layer 0 holds more than kv_size rows)"],
        }},
        "rotary": ROTARY,
        "driver": "per chunk, as hermes_vqa does: new keys (pre-RoPE inputs `chunkC.k.L`) rotated at each layer's "
                  "own start (start_positions), appended; three pseudo-query attention tensors of random softmax "
                  "rows (1, H, q, S_l + q); prune_kv_cache_by_attention(local, global, mixed, kv_size); "
                  "apply_kv_cache_pruning_strict when layer 0 holds more than kv_size rows. "
                  "`chunkC.attn.{global,mixed}.L` are those tensors reduced as the release reduces them "
                  "(mean over heads, then over the prompt's rows), over every cached row, prefix included. "
                  "`chunkC.score.L` is the smoothed score of layer L's rows after the prefix. The `ties` "
                  "scenario's attention logits depend only on the key and take two values, so the scores tie.",
        "ties": "broken as torch.topk(score, k, sorted=False) breaks them on CPU (torch 2.13.0)",
        "scenarios": scenarios,
        "tiers": json.load(open(f"{OUT}/hermes_tiers.json")),
        "tiers_source": "the (layer_type, layer_recency_alpha, k, gamma) locals of prune_kv_cache_by_attention, "
                        "read while it ran, for LlavaOneVision_Hermes (inference/llavaov_hermes.py) and "
                        "QwenVL_Hermes (inference/qwenvl_hermes.py), thresholds as their load_model sets them",
    }
    json.dump(doc, open(f"{DEST}/hermes_release.json", "w"), indent=1)
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{DEST}/hermes_release.safetensors")


def snapkv():
    meta = json.load(open(f"{OUT}/snapkv_kvpress.json"))
    doc = {
        "fixture": "hermes-lab conformance: SnapKV as kvpress implements it",
        "how": "run, not read: kvpress's SnapKVPress.score and ScorerPress.compress called unchanged on these "
               "inputs, CPU float32, torch 2.13.0 / transformers 5.23.0, outside hermes-lab "
               "(tests/conformance/regenerate/snapkv_run.py)",
        "source": {"repo": "NVIDIA/kvpress", "commit": "8bb29b9c3078452a86d692f29123fa6c793e2b05",
                   "files": {"kvpress/presses/snapkv_press.py": ["SnapKVPress.score (the eager `attentions` path)"],
                             "kvpress/presses/scorer_press.py": ["ScorerPress.compress"]}},
        "driver": "`C.query` (1, Hq, S, D) and `C.key` (1, Hkv, S, D) are queries and keys after RoPE; the attention "
                  "handed to score() is their causal softmax in float32 (scale 1/sqrt(D), keys repeated per query "
                  "head), as eager attention returns it. `C.scores` is score()'s (1, Hkv, S) output; "
                  "kept_per_head is what compress() kept, per KV head, in its topk order (read off keys that hold "
                  "their own index).",
        "cases": meta["cases"],
    }
    json.dump(doc, open(f"{DEST}/snapkv_kvpress.json", "w"), indent=1)
    save_file(load_file(f"{OUT}/snapkv_kvpress.safetensors"), f"{DEST}/snapkv_kvpress.safetensors")


def rekv():
    meta = json.load(open(f"{OUT}/rekv_release.json"))
    doc = {
        "fixture": "hermes-lab conformance: ReKV retrieval as released",
        "how": "run, not read: ContextManager._append_global and ContextManager._calc_block_topk called unchanged "
               "on CPU float32, torch 2.13.0, on a manager given only the attributes those methods read, as "
               "init() sets them (init() itself allocates CUDA memory) (tests/conformance/regenerate/rekv_run.py)",
        "source": {"repo": "Becomebright/ReKV", "commit": "63793f752be2a20bcc0ce24a213e9a1cffadb98c",
                   "files": {"model/attention/kv_cache_manager.py": [
                       "ContextManager._append_global (block_vectors: one per frame, the mean of its un-rotated "
                       "keys repeated per query head)",
                       "ContextManager._calc_block_topk (similarity: the question's score of each block; retrieved)",
                   ]}},
        "driver": "`C.keys` (1, Hkv, n_init + frames * block_size, D) are the stream's keys as ReKV stores them "
                  "(before RoPE); `C.query` (1, Hq, question_tokens, D) the question's queries before RoPE. "
                  "offloaded: the local window had filled (init_exc) and _append_global cut every frame into a "
                  "block; otherwise every token is still in global_remainder and retrieval ranks the window's "
                  "frames. chunk_size 1, as ReKV's scripts run it.",
        "cases": meta["cases"],
        "read_not_run": {
            "what": "the question-time layout, read line by line (it moves CUDA buffers and cannot run here)",
            "files": {"model/attention/kv_cache_manager.py": ["ContextManager.get_retrieved_kv"],
                      "model/attention/rekv_attention.py": ["rekv_attention_forward, steps 2-4"],
                      "model/llava_onevision_rekv.py": ["LlavaOneVision_ReKV.question_answering"]},
            "facts": [
                "the retrieval pass returns [init KV][retrieved blocks in ascending block order]; the local window "
                "is not part of it",
                "the prompt is then prefilled on that KV with rotary positions 0..N-1 over the cached rows "
                "(init first) and N.. for the prompt, so retrieved frames sit contiguously after the init rows",
                "every block is a whole frame (block_size = n_frame_tokens); retrieve_size defaults to 64 "
                "(video_qa/base.py)",
            ],
            "example": {"n_init": 3, "block_size": 4, "retrieved": [2, 5, 6],
                        "rows": "init 0-2, then frames 2, 5, 6", "positions": list(range(15)),
                        "question_starts_at": 15},
        },
    }
    json.dump(doc, open(f"{DEST}/rekv_release.json", "w"), indent=1)
    save_file(load_file(f"{OUT}/rekv_release.safetensors"), f"{DEST}/rekv_release.safetensors")


if __name__ == "__main__":
    os.makedirs(DEST, exist_ok=True)
    hermes()
    snapkv()
    rekv()
