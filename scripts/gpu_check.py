"""The Python half of ``scripts/gpu-check.sh`` parts (e)-(g), and its one JSON and one table.

Subcommands (each writes one JSON fragment into the results folder; ``report`` joins them):

* ``rows``: the attention output of the fast path (flash-attn when installed and on CUDA in half precision,
  else sdpa) and the rows an observer reads (:meth:`AttentionEvent.attention`), against eager attention
  computed in float32, on one layer of a given shape;
* ``bench``: summarises a ``hermes-lab bench --json`` run of sink-window and hermes: TTFT at the shortest and
  longest stream, ingest frames/s, and hermes's ratios to sink-window;
* ``sweep``: a ``hermes-lab eval`` sweep launched by torchrun with N processes against one process: the same
  accuracies and predictions, and the wall time of each;
* ``report``: every fragment in one JSON file and one table (Markdown).

Targets are reported MET / MISSED; only a wrong result (rows or outputs outside tolerance, a distributed
sweep that disagrees with one process) is a failure (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: (Hq, Hkv, D, new query rows, keys) per shape name: one layer of the model, one chunk against a full budget
SHAPES = {
    "7b": (28, 4, 128, 256, 6256),  # Qwen2.5-VL-7B: 28 query / 4 KV heads of 128; budget 6000 + a 256-token chunk
    "small": (4, 2, 16, 8, 64),  # the dry run
}
#: max |difference| allowed against float32 eager attention, per dtype: (output, probability rows)
TOLERANCE = {"float32": (1e-5, 1e-6), "bfloat16": (3e-2, 1e-2), "float16": (5e-3, 2e-3)}


def write(path: str, fragment: dict) -> None:
    Path(path).write_text(json.dumps(fragment, indent=1))


def rows_check(args) -> int:
    import torch

    from hermes_policy import attention as seam

    dtype = getattr(torch, args.dtype)
    hq, hkv, d, q, s = SHAPES[args.shape]
    gen = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(1, h, n, d, generator=gen).to(args.device, dtype)
                         for h, n in ((hq, q), (hkv, s), (hkv, s)))
    scale = d**-0.5
    # eager reference, float32 throughout: softmax(q k^T) v, the q new rows the last q keys (right-aligned)
    k32 = key[0].float().repeat_interleave(hq // hkv, dim=0)
    scores = torch.matmul(query[0].float(), k32.transpose(-1, -2)) * scale
    mask = seam.right_aligned_causal_mask(q, s, device=query.device)
    ref_rows = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)  # (Hq, q, S)
    ref_out = torch.matmul(ref_rows, value[0].float().repeat_interleave(hq // hkv, dim=0)).transpose(0, 1)
    backend = "flash-attn" if seam._flash_attn_available(query) else "sdpa"
    out = seam._attend(query, key, value, None, scale, 0.0)  # what ingest and questions run
    rows = seam.attention_rows(query[0], key[0], range(q), scale)  # what observers read
    out_diff = float((out[0].float() - ref_out).abs().max())
    rows_diff = float((rows - ref_rows).abs().max())
    tol_out, tol_rows = TOLERANCE[args.dtype]
    ok = out_diff <= tol_out and rows_diff <= tol_rows
    write(args.out, {"check": "rows", "device": str(query.device), "dtype": args.dtype, "backend": backend,
                     "shape": {"heads": hq, "kv_heads": hkv, "head_dim": d, "queries": q, "keys": s},
                     "output_max_abs_diff": out_diff, "rows_max_abs_diff": rows_diff,
                     "tolerance": {"output": tol_out, "rows": tol_rows}, "ok": ok})
    print(f"{backend} output vs eager: max |d| {out_diff:.2e} (tol {tol_out:g}); observed rows vs eager: "
          f"{rows_diff:.2e} (tol {tol_rows:g}) on {query.device} {args.dtype}, {hq}/{hkv} heads x {d}, "
          f"{q} rows x {s} keys")
    return 0 if ok else 1


def bench_check(args) -> int:
    rows = json.loads(Path(args.bench).read_text())
    by = {(r["policy"], r["frames"]): r for r in rows}
    lengths = sorted({r["frames"] for r in rows})
    short, long = lengths[0], lengths[-1]

    def fps(r, key="ingest_ms_per_frame"):
        return None if r.get(key) is None else 1000 / r[key]

    cells = {f"{p}@{n}": {"ttft_ms": r["ttft_ms"], "ingest_fps": fps(r),
                          "ingest_full_fps": fps(r, "ingest_full_ms_per_frame"),
                          "policy_ms_per_frame": r.get("policy_ms_per_frame"), "kv_bytes": r["kv_bytes"],
                          "peak_gpu_bytes": r.get("peak_gpu_bytes"), "tokens_per_frame": r.get("tokens_per_frame")}
             for (p, n), r in by.items()}
    h, sw, h_short = by["hermes", long], by["sink-window", long], by["hermes", short]
    full = "ingest_full_ms_per_frame" if h.get("ingest_full_ms_per_frame") and sw.get("ingest_full_ms_per_frame") \
        else "ingest_ms_per_frame"
    targets = [
        {"name": f"hermes TTFT <= 1.05x sink-window TTFT at {long} frames",
         "value": h["ttft_ms"] / sw["ttft_ms"], "limit": 1.05},
        {"name": f"hermes ingest <= 1.10x sink-window ingest at {long} frames ({full})",
         "value": h[full] / sw[full], "limit": 1.10},
        {"name": f"hermes TTFT flat: {long} frames <= 1.1x {short} frames",
         "value": h["ttft_ms"] / h_short["ttft_ms"], "limit": 1.1},
    ]
    for t in targets:
        t["met"] = t["value"] <= t["limit"]
        print(f"  {'MET   ' if t['met'] else 'MISSED'} {args.model}: {t['name']}: {t['value']:.3f}x")
    write(args.out, {"check": "bench", "model": args.model, "frames": lengths, "cells": cells, "targets": targets,
                     "ok": True})
    return 0


def eval_rows(folder: Path):
    import pyarrow.parquet as pq

    results = json.loads((folder / "results.json").read_text())["results"]
    accuracies = [(r["policy"], r["budget"], r["accuracy"]) for r in results]
    predictions = [(r.get("run"), r.get("video_index"), r.get("question_index"), r.get("prediction"))
                   for r in pq.read_table(folder / "rows.parquet").to_pylist()]
    return accuracies, predictions


def sweep_check(args) -> int:
    work = Path(args.work)
    common = [*args.eval_args.split(), "--device", args.device, "--json"]
    py = sys.executable
    env = {**os.environ, "TQDM_DISABLE": "1"}
    wall = {}
    for name, launch in (("1 process", [py, "-m", "hermes_lab", "eval"]),
                         (f"torchrun x{args.nproc}", [py, "-m", "torch.distributed.run", "--standalone",
                                                     "--nproc_per_node", str(args.nproc), "-m", "hermes_lab", "eval"])):
        out = work / ("single" if name == "1 process" else "dist")
        start = time.perf_counter()
        subprocess.run([*launch, "--data", args.data, "--out", str(out), *common], check=True, env=env,
                       stdout=subprocess.DEVNULL, timeout=args.timeout)
        wall[name] = time.perf_counter() - start
    one, two = eval_rows(work / "single"), eval_rows(work / "dist")
    ok = one == two
    speedup = wall["1 process"] / wall[f"torchrun x{args.nproc}"]
    print(f"accuracies and predictions {'equal' if ok else 'DIFFER'}; wall 1 process {wall['1 process']:.1f} s, "
          f"torchrun x{args.nproc} {wall[f'torchrun x{args.nproc}']:.1f} s: {speedup:.2f}x")
    write(args.out, {"check": "sweep", "device": args.device, "nproc": args.nproc, "eval_args": args.eval_args,
                     "wall_s": wall, "speedup": speedup, "equal": ok, "accuracies": one[0], "ok": ok})
    return 0 if ok else 1


def report(args) -> int:
    fragments = [json.loads(p.read_text()) for p in sorted(Path(args.results).glob("*.json"))]
    doc = {"gpus": args.gpus, "dry_run": args.gpus == 0, "flash_attn": args.flash_attn == "1",
           "checks": fragments, "summary": [line for line in Path(args.summary).read_text().splitlines() if line]}
    Path(args.json).write_text(json.dumps(doc, indent=1))
    lines = [f"# gpu-check ({'DRY RUN on the CPU' if doc['dry_run'] else f'{args.gpus} GPU(s)'}; "
             f"flash-attn {'installed' if doc['flash_attn'] else 'not installed'})", "",
             "| check | measured | compared with | result |", "|---|---|---|---|"]
    for f in fragments:
        if f["check"] == "rows":
            lines.append(f"| rows {f['device']} {f['dtype']} ({f['backend']}) | output max abs diff "
                         f"{f['output_max_abs_diff']:.2e}, rows {f['rows_max_abs_diff']:.2e} | eager attention in "
                         f"float32; tol {f['tolerance']['output']:g} / {f['tolerance']['rows']:g} | "
                         f"{'PASS' if f['ok'] else 'FAIL'} |")
        elif f["check"] == "bench":
            for cell, c in f["cells"].items():
                fps = "-" if c["ingest_fps"] is None else f"{c['ingest_fps']:.1f}"
                lines.append(f"| bench {f['model']} {cell} | TTFT {c['ttft_ms']:.1f} ms, ingest {fps} frames/s | "
                             f"- | - |")
            for t in f["targets"]:
                lines.append(f"| target {f['model']} | {t['value']:.3f}x | {t['name']} | "
                             f"{'MET' if t['met'] else 'MISSED'} |")
        elif f["check"] == "sweep":
            walls = ", ".join(f"{k} {v:.1f} s" for k, v in f["wall_s"].items())
            lines.append(f"| eval sweep, torchrun x{f['nproc']} on {f['device']} | {walls}: {f['speedup']:.2f}x | "
                         f"one process (same accuracies and predictions) | {'PASS' if f['ok'] else 'FAIL'} |")
    lines += ["", "Summary:", "", *[f"    {s}" for s in doc["summary"]]]
    Path(args.table).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("rows")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(TOLERANCE))
    p.add_argument("--shape", default="small", choices=sorted(SHAPES))
    p.add_argument("--out", required=True)
    p.set_defaults(run=rows_check)
    p = sub.add_parser("bench")
    p.add_argument("bench")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(run=bench_check)
    p = sub.add_parser("sweep")
    p.add_argument("--data", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-args", required=True)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", required=True)
    p.set_defaults(run=sweep_check)
    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--gpus", type=int, required=True)
    p.add_argument("--flash-attn", default="0")
    p.add_argument("--json", required=True)
    p.add_argument("--table", required=True)
    p.set_defaults(run=report)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
