# ruff: noqa: C408, SIM115 -- a scratch tool run outside the project, by hand
"""Scratch only: run kvpress's SnapKVPress.score and ScorerPress.compress on small random queries/keys."""
import os

#: the scratch folder outside the project: src/<owner+repo> (git archive of each mirror), tf444, out
SCRATCH = os.environ.get("CONFORMANCE_SCRATCH", "/tmp/conf")

import json
from types import SimpleNamespace

import kvpress_env as kv
import torch
from safetensors.torch import save_file

OUT = os.path.join(SCRATCH, "out")


def eager_attention(q, k):
    """(1, Hq, S, S) causal softmax in float32, as transformers' eager attention returns it (GQA by repeat)."""
    hq, hkv = q.shape[1], k.shape[1]
    kk = k.repeat_interleave(hq // hkv, dim=1)
    s = q.shape[2]
    logits = q @ kk.transpose(-1, -2) / q.shape[-1] ** 0.5
    logits = logits.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(logits, dim=-1, dtype=torch.float32)


def case(name, *, S=40, hq=4, hkv=2, d=8, window=8, kernel=5, ratio=0.5, ties=False, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, hq, S, d, generator=gen)
    k = torch.randn(1, hkv, S, d, generator=gen)
    if ties:
        # every key of a KV head identical except a few: many equal attention weights
        k = k[:, :, :1].expand(1, hkv, S, d).clone()
        k[:, :, ::7] += 1.0
    attn = eager_attention(q, k)
    press = kv.SnapKVPress(compression_ratio=ratio, window_size=window, kernel_size=kernel)
    module = SimpleNamespace(config=SimpleNamespace(num_attention_heads=hq), head_dim=d)
    hidden = torch.zeros(1, S, 1)
    scores = press.score(module, hidden, k, None, attn, {})
    # keys whose every entry is their own index: compress's gather then reads out the kept indices per head
    index_keys = torch.arange(S, dtype=torch.float32).view(1, 1, S, 1).expand(1, hkv, S, d).contiguous()
    kept_k, _ = press.compress(module, hidden, index_keys, index_keys.clone(), attn, {})
    kept = kept_k[0, :, :, 0].long().tolist()  # (Hkv, n_kept) in topk order
    meta = {"case": name, "seq_len": S, "heads": hq, "kv_heads": hkv, "head_dim": d, "window_size": window,
            "kernel_size": kernel, "compression_ratio": ratio, "n_kept": int(S * (1 - ratio)), "ties": ties,
            "seed": seed, "kept_per_head": kept}
    tensors = {f"{name}.query": q, f"{name}.key": k, f"{name}.scores": scores.contiguous()}
    print(name, meta["n_kept"], [sorted(h)[:6] for h in kept])
    return meta, tensors


if __name__ == "__main__":
    cases, tensors = [], {}
    for args in (
        dict(name="gqa_half", hkv=2, ratio=0.5, seed=0),
        dict(name="one_head_half", hkv=1, ratio=0.5, seed=1),
        dict(name="one_head_quarter_k3", hkv=1, ratio=0.75, kernel=3, seed=2),
        dict(name="one_head_window_only", hkv=1, ratio=0.8, seed=3),      # n_kept = 8 = the window
        dict(name="one_head_below_window", hkv=1, ratio=0.9, seed=4),     # n_kept = 4 < the window
        dict(name="one_head_ties", hkv=1, ratio=0.5, ties=True, seed=5),
        dict(name="gqa_ties", hkv=2, ratio=0.5, ties=True, seed=6),
        dict(name="one_head_k1", hkv=1, ratio=0.5, kernel=1, seed=7),
    ):
        m, t = case(**args)
        cases.append(m)
        tensors.update(t)
    save_file(tensors, f"{OUT}/snapkv_kvpress.safetensors")
    json.dump({"cases": cases}, open(f"{OUT}/snapkv_kvpress.json", "w"))
