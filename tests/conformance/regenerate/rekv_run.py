# ruff: noqa: C408, SIM115 -- a scratch tool run outside the project, by hand
"""Scratch only: run ReKV's ContextManager._append_global (block vectors) and _calc_block_topk (retrieval) on CPU.

The manager is built without its CUDA-only init(): only the attributes those two methods read are set,
exactly as init() sets them (shapes, VectorTensor stores, empty init KV).
"""
import os

#: the scratch folder outside the project: src/<owner+repo> (git archive of each mirror), tf444, out
SCRATCH = os.environ.get("CONFORMANCE_SCRATCH", "/tmp/conf")

import json
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(SCRATCH, "src", "Becomebright+ReKV"))
from model.attention import kv_cache_manager as km

OUT = os.path.join(SCRATCH, "out")


def manager(*, hq, hkv, d, n_init, block_size, topk, chunk_size=1):
    cm = object.__new__(km.ContextManager)
    cm.n_init, cm.block_size, cm.topk, cm.chunk_size = n_init, block_size, topk, chunk_size
    cm.batch_size = cm.num_units = 1
    cm.num_heads, cm.num_heads_kv, cm.dim_head = hq, hkv, d
    cm.unit_size, cm.unit_size_kv = hq, hkv
    cm.global_blocks = [[]]
    cm.cached_blocks = [{}]
    cm.num_global_block = 0
    cm.block_k = [km.VectorTensor(d * hq, torch.float32, "cpu")]
    cm.cuda_cache = None
    cm.pin_memory = False
    cm.reset_retrieval()
    return cm


def case(name, *, frames, hq=4, hkv=2, d=8, n_init=3, block_size=4, topk=3, q_len=5, offloaded=True, ties=False,
         seed=0):
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randn(1, hkv, n_init + frames * block_size, d, generator=gen)  # un-rotated, as ReKV stores them
    if ties:
        keys[:, :, n_init:] = keys[:, :, n_init : n_init + block_size].repeat(1, 1, frames, 1)
    query = torch.randn(1, hq, q_len, d, generator=gen)  # the question's queries, un-rotated
    cm = manager(hq=hq, hkv=hkv, d=d, n_init=n_init, block_size=block_size, topk=topk)
    if offloaded:
        # as after the local window filled: init KV taken, the rest cut into blocks by _append_global
        cm.init_exc = True
        cm.init_k = keys[:, :, :n_init]
        cm.global_remainder = (keys[:, :, n_init:], torch.zeros_like(keys[:, :, n_init:]))
        cm._global_remainder_st, cm._global_remainder_ed = 0, frames * block_size
        cm._append_global()
        block_vectors = cm.block_k[0].get_data().clone()  # (n_blocks, Hq*D)
    else:
        # the local window has not filled: every token is still in global_remainder, init KV included
        cm.init_exc = False
        cm.global_remainder = (keys, torch.zeros_like(keys))
        block_vectors = None
    chosen = cm._calc_block_topk(query)[0]
    meta = {"case": name, "frames": frames, "heads": hq, "kv_heads": hkv, "head_dim": d, "n_init": n_init,
            "block_size": block_size, "topk": topk, "chunk_size": 1, "question_tokens": q_len,
            "offloaded": offloaded, "ties": ties, "seed": seed, "retrieved": [int(i) for i in chosen]}
    tensors = {f"{name}.keys": keys, f"{name}.query": query}
    if cm.similarity is not None:
        tensors[f"{name}.similarity"] = cm.similarity[0].clone()
    if block_vectors is not None:
        tensors[f"{name}.block_vectors"] = block_vectors
    print(name, meta["retrieved"], None if cm.similarity is None else cm.similarity[0][:4])
    return meta, tensors


if __name__ == "__main__":
    cases, tensors = [], {}
    for args in (
        dict(name="gqa", frames=7, seed=0),
        dict(name="mha", frames=7, hq=2, hkv=2, seed=1),
        dict(name="fewer_than_topk", frames=3, topk=3, seed=2),
        dict(name="topk_one", frames=5, topk=1, seed=3),
        dict(name="ties", frames=6, ties=True, seed=4),
        dict(name="window_not_full", frames=6, offloaded=False, seed=5),
        dict(name="window_not_full_few", frames=2, offloaded=False, seed=6),
    ):
        m, t = case(**args)
        cases.append(m)
        tensors.update(t)
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{OUT}/rekv_release.safetensors")
    json.dump({"cases": cases}, open(f"{OUT}/rekv_release.json", "w"))
