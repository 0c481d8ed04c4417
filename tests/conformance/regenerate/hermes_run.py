# ruff: noqa: SIM115 -- a scratch tool run outside the project, by hand
"""Scratch only: run the HERMES release's pruning code (LLaVA-OV online inference) on small random inputs.

Writes SCRATCH/out/hermes_*.{json,safetensors}; only those facts go into hermes-lab's fixtures.
"""
import os

#: the scratch folder outside the project: src/<owner+repo> (git archive of each mirror), tf444, out
SCRATCH = os.environ.get("CONFORMANCE_SCRATCH", "/tmp/conf")

import json
import sys
from types import SimpleNamespace

import release_env as rel
import torch
from safetensors.torch import save_file

Cls = rel.llavaov_hermes.LlavaOneVision_Hermes
R1 = rel.reindex_1d
OUT = os.path.join(SCRATCH, "out")


class FakeLLM(torch.nn.Module):
    def __init__(self, heads, head_dim, base, max_pos):
        super().__init__()
        self.rotary_emb = rel.Qwen2RotaryEmbedding(head_dim, max_position_embeddings=max_pos, base=base)
        self.config = SimpleNamespace(hidden_size=heads * head_dim, num_attention_heads=heads,
                                      max_position_embeddings=max_pos)


def release_object(cls, L, P, kv_size, heads, head_dim, base, max_pos, streaming):
    """An instance of the release's class with only the attributes its pruning methods read (set as load_model
    sets them)."""
    obj = object.__new__(cls)
    torch.nn.Module.__init__(obj)
    obj.device = torch.device("cpu")
    obj.num_layers = L
    obj.short_term_ratio, obj.long_term_ratio = 0.1, 0.3
    obj.short_term_threshold = int(L * obj.short_term_ratio)
    obj.long_term_threshold = int(L * (1 - obj.long_term_ratio))
    obj.visual_start_idx = P
    obj.token_activity_cache = [None] * L
    obj._position_ids_cache = [None] * L
    obj.kv_size = kv_size
    obj.streaming = streaming
    obj.language_model = FakeLLM(heads, head_dim, base, max_pos)
    return obj


def rotate_at(obj, k, positions):
    cos, sin = R1.compute_cos_sin_for_positions(obj.language_model, len(positions), positions, k.dtype, k.device)
    return R1.apply_rotary_pos_emb_1d(k, cos, sin)


class TopkRecorder:
    """Observe the release's torch.topk calls (score, k) without changing them."""

    def __init__(self):
        self.calls = []

    def __enter__(self):
        self.orig = torch.topk

        def rec(x, k, *a, **kw):
            self.calls.append((x.detach().clone(), int(k)))
            return self.orig(x, k, *a, **kw)

        torch.topk = rec
        return self

    def __exit__(self, *exc):
        torch.topk = self.orig


def attention(gen, L, lengths, heads, q_len, kind):
    """(1, H, q, S_l + q) softmax rows per layer."""
    out = []
    for s in lengths:
        if kind == "ties":
            # logits depend only on the key column and take two values: the mean row has exact ties
            col = torch.randint(0, 2, (s + q_len,), generator=gen).float()
            logits = col.expand(1, heads, q_len, s + q_len).clone()
        else:
            logits = torch.randn(1, heads, q_len, s + q_len, generator=gen) * 2
        out.append(torch.softmax(logits, dim=-1))
    return out


def visual_mean(attn_layer, s):
    # the same reduction the release applies (heads, then rows), over every cached column
    return attn_layer[0].mean(dim=0)[:, :s].mean(dim=0)


def run_stream(name, *, L=10, P=3, kv_size=12, chunks=6, n=8, heads=4, kv_heads=2, head_dim=8,
               base=1e6, max_pos=32768, streaming=True, kind="random", seed=0):
    gen = torch.Generator().manual_seed(seed)
    obj = release_object(Cls, L, P, kv_size, heads, head_dim, base, max_pos, streaming)
    tensors = {}
    pre = torch.arange(P)
    kv = []
    for layer in range(L):
        k = torch.randn(1, kv_heads, P, head_dim, generator=gen)
        v = torch.randn(1, kv_heads, P, head_dim, generator=gen)
        tensors[f"prefix.k.{layer}"], tensors[f"prefix.v.{layer}"] = k, v
        kv.append((rotate_at(obj, k, pre), v))
        obj._position_ids_cache[layer] = pre.clone()
    obj.kv_cache = kv
    steps = []
    for c in range(chunks):
        start = obj._get_next_start_pos_per_layer()
        new = []
        for layer in range(L):
            k = torch.randn(1, kv_heads, n, head_dim, generator=gen)
            v = torch.randn(1, kv_heads, n, head_dim, generator=gen)
            tensors[f"chunk{c}.k.{layer}"], tensors[f"chunk{c}.v.{layer}"] = k, v
            pos = torch.arange(start[layer], start[layer] + n)
            old_k, old_v = obj.kv_cache[layer]
            new.append((torch.cat([old_k, rotate_at(obj, k, pos)], 2), torch.cat([old_v, v], 2)))
        obj.kv_cache = new
        obj._append_position_ids(start, n)
        lengths = obj._get_cache_seq_len_per_layer()
        local = attention(gen, L, lengths, heads, 3, kind)
        glob = attention(gen, L, lengths, heads, 4, kind)
        mixed = attention(gen, L, lengths, heads, 6, kind)
        for layer in range(L):
            tensors[f"chunk{c}.attn.global.{layer}"] = visual_mean(glob[layer], lengths[layer])
            tensors[f"chunk{c}.attn.mixed.{layer}"] = visual_mean(mixed[layer], lengths[layer])
        with TopkRecorder() as rec:
            keep = obj.prune_kv_cache_by_attention(local, glob, mixed, num_keep=obj.kv_size)
        pruned = obj.kv_cache[0][0].shape[2] > obj.kv_size
        if pruned:
            obj.apply_kv_cache_pruning_strict(keep)
        for layer, (score, _k) in enumerate(rec.calls):
            tensors[f"chunk{c}.score.{layer}"] = score
        steps.append({
            "chunk": c,
            "start_positions": start,
            "rows_before": lengths,
            "pruned": bool(pruned),
            "topk_k": [k for _, k in rec.calls],
            "keep_rows": [list(map(int, x)) for x in keep] if pruned else None,
            "positions_after": [obj._position_ids_cache[layer].tolist() for layer in range(L)],
        })
    for layer in range(L):
        tensors[f"final.k.{layer}"] = obj.kv_cache[layer][0].contiguous()
        tensors[f"final.v.{layer}"] = obj.kv_cache[layer][1].contiguous()
    meta = {
        "scenario": name, "num_layers": L, "prefix": P, "kv_size": kv_size, "chunks": chunks, "chunk_tokens": n,
        "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim, "rope_base": base,
        "max_position_embeddings": max_pos, "streaming": streaming, "attention": kind, "seed": seed,
        "short_term_threshold": obj.short_term_threshold, "long_term_threshold": obj.long_term_threshold,
        "steps": steps,
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{OUT}/hermes_{name}.safetensors")
    json.dump(meta, open(f"{OUT}/hermes_{name}.json", "w"))
    print(name, [s["pruned"] for s in steps], [len(p) for p in steps[-1]["positions_after"]][:3])


def run_unequal(name="unequal", L=10, P=2, kv_size=5, heads=2, seed=7):
    """One call of prune_kv_cache_by_attention with layers of different lengths (smoothing must resample)."""
    gen = torch.Generator().manual_seed(seed)
    obj = release_object(Cls, L, P, kv_size, heads, 8, 1e6, 32768, True)
    lengths = [P + t for t in (9, 7, 12, 6, 10, 8, 11, 5, 9, 13)][:L]
    obj.kv_cache = [(torch.zeros(1, 1, s, 8), torch.zeros(1, 1, s, 8)) for s in lengths]
    local = attention(gen, L, lengths, heads, 3, "random")
    glob = attention(gen, L, lengths, heads, 4, "random")
    mixed = attention(gen, L, lengths, heads, 5, "random")
    tensors = {}
    for layer in range(L):
        tensors[f"attn.global.{layer}"] = visual_mean(glob[layer], lengths[layer])
        tensors[f"attn.mixed.{layer}"] = visual_mean(mixed[layer], lengths[layer])
    with TopkRecorder() as rec:
        keep = obj.prune_kv_cache_by_attention(local, glob, mixed, num_keep=kv_size)
    for layer, (score, _k) in enumerate(rec.calls):
        tensors[f"score.{layer}"] = score
    meta = {"scenario": name, "num_layers": L, "prefix": P, "kv_size": kv_size, "rows": lengths,
            "keep_rows": [list(map(int, x)) for x in keep], "topk_k": [k for _, k in rec.calls], "seed": seed}
    save_file(tensors, f"{OUT}/hermes_{name}.safetensors")
    json.dump(meta, open(f"{OUT}/hermes_{name}.json", "w"))
    print(name, meta["topk_k"])


def tier_params(cls, L):
    """(tier, alpha, k, gamma) per layer as the release's prune function sets them, read off its locals."""
    obj = release_object(cls, L, 1, 4, 1, 8, 1e6, 32768, True)
    lengths = [1 + 6] * L
    obj.kv_cache = [(torch.zeros(1, 1, s, 8), torch.zeros(1, 1, s, 8)) for s in lengths]
    gen = torch.Generator().manual_seed(0)
    a = attention(gen, L, lengths, 1, 2, "random")
    found, gammas = {}, {}

    def tracer(frame, event, arg):
        if frame.f_code.co_name != "prune_kv_cache_by_attention":
            return tracer
        loc = frame.f_locals
        if "layer_recency_alpha" in loc and "raw_score" in loc and "refined_scores" not in loc:
            found[loc["layer_idx"]] = (loc["layer_type"], float(loc["layer_recency_alpha"]), float(loc["k"]))
        if "gamma" in loc and "i" in loc:
            gammas[loc["i"]] = float(loc["gamma"])
        return tracer

    sys.settrace(tracer)
    try:
        obj.prune_kv_cache_by_attention(a, a, a, num_keep=4)
    finally:
        sys.settrace(None)
    return [{"layer": i, "tier": found[i][0], "alpha": found[i][1], "k": found[i][2], "gamma": gammas.get(i)}
            for i in range(L)]


if __name__ == "__main__":
    run_stream("lazy")
    run_stream("eager", streaming=False, seed=1)
    run_stream("ties", kind="ties", seed=2)
    run_stream("exact", kv_size=16, chunks=3, seed=3)
    run_stream("tiny", kv_size=3, chunks=3, seed=4)
    run_stream("roomy", kv_size=1000, chunks=2, seed=5)
    run_unequal()
    rel.stub_missing()
    tiers = {f"llava-ov/{L}": tier_params(Cls, L) for L in (10, 24, 28, 30, 32)}
    tiers.update({f"qwen2.5-vl/{L}": tier_params(rel.qwenvl_hermes.QwenVL_Hermes, L) for L in (28, 36)})
    json.dump(tiers, open(f"{OUT}/hermes_tiers.json", "w"), indent=0)
    print({k: sum(1 for x in v if x["tier"] == "long-term") for k, v in tiers.items()})
