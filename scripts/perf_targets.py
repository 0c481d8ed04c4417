"""Paired policy timings in one process: the ratios the performance targets are stated in.

``hermes-lab bench`` measures each (policy, length) cell in turn. On a shared machine its TTFT
column moves by +-15% from one minute to the next, which is more than the differences the targets
are about. This script removes that drift: it streams every policy in the same process, repeats
each stream ``--repeats`` times in alternation, and asks the questions to all live sessions in
rounds, so every ratio compares measurements taken side by side.

Reported per policy, and as a ratio to the first one (the reference, ``sink-window`` by default):

* ingest ms/frame once the cache first held more video tokens than the budget (median over repeats);
* its policy share (pruning, pseudo-queries, re-indexing), from the session's timed stages;
* TTFT at the end of the stream: median over rounds of the same questions, asked in alternation.

Usage::

    python scripts/perf_targets.py --model embedded-smollm2 --frames 1024 --budget 512 \\
        --policies sink-window,hermes,hermes:pseudo_query=forward --repeats 3 [--json]

A ``name:key=value;key=value`` entry passes parameters to the policy (``hermes:pseudo_query=forward``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from tqdm import tqdm

from hermes_policy.bench import QUESTIONS, video_for
from hermes_policy.models import load_model
from hermes_policy.policies import make_policy
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import parse_frame_size


def parse_policy(entry: str, budget: int):
    name, _, params = entry.partition(":")
    kwargs = dict(item.split("=", 1) for item in params.split(";") if item) if params else {}
    return make_policy(name, budget=budget, **kwargs)


def stream(adapter, entry: str, frames: list, budget: int, chunk_frames: int) -> tuple[StreamingSession, dict]:
    session = StreamingSession(adapter, parse_policy(entry, budget),
                               SessionConfig(chunk_frames=chunk_frames, max_new_tokens=1, timed=True))
    full = None  # (frames seen, clock, policy seconds) when the budget was first exceeded
    for frame in frames:
        session.ingest([frame])
        if full is None and session.video_tokens_seen > budget:
            full = (session.frames_seen, time.perf_counter(), session.stage_seconds["policy"])
    session.flush()
    end = time.perf_counter()
    if full is None or session.frames_seen == full[0]:
        raise SystemExit(f"{entry}: the stream never filled --budget {budget}; use more --frames or a smaller budget")
    n = session.frames_seen - full[0]
    return session, {"ingest_full_ms_per_frame": (end - full[1]) / n * 1000,
                     "policy_ms_per_frame": (session.stage_seconds["policy"] - full[2]) / n * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded-smollm2")
    parser.add_argument("--video", default="synthetic:seed=1,frames=64")
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--frame-size", default=None, help="WIDTHxHEIGHT (default: the video's own)")
    parser.add_argument("--budget", type=int, default=512)
    parser.add_argument("--chunk-frames", type=int, default=4)
    parser.add_argument("--policies", default="sink-window,hermes")
    parser.add_argument("--repeats", type=int, default=3, help="streams per policy, in alternation")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the questions for TTFT")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    entries = [p.strip() for p in args.policies.split(",") if p.strip()]
    for entry in entries:
        parse_policy(entry, args.budget)  # a bad name or parameter fails before the model loads
    size = None if args.frame_size is None else parse_frame_size(args.frame_size)
    adapter = load_model(args.model)
    frames = list(video_for(args.video, args.frames, size).frames())
    warm = StreamingSession(adapter, None, SessionConfig(chunk_frames=args.chunk_frames, max_new_tokens=1))
    warm.ingest(frames[: 2 * args.chunk_frames])
    warm.ask(QUESTIONS[0], max_new_tokens=1)

    ingest: dict[str, list[dict]] = {e: [] for e in entries}
    sessions: dict[str, StreamingSession] = {}
    bar = tqdm(total=args.repeats * len(entries), unit="stream", file=sys.stderr, leave=False)
    for _ in range(args.repeats):
        for entry in entries:
            session, measured = stream(adapter, entry, frames, args.budget, args.chunk_frames)
            ingest[entry].append(measured)
            sessions[entry] = session  # the last repeat's session answers the questions
            bar.update(1)
    bar.close()
    ttft: dict[str, list[float]] = {e: [] for e in entries}
    for _ in range(args.rounds):
        for question in QUESTIONS:
            for entry in entries:
                ttft[entry].append(sessions[entry].ask(question, max_new_tokens=1).ttft_ms)

    rows = []
    for entry in entries:
        rows.append({
            "policy": entry,
            "ingest_full_ms_per_frame": statistics.median(m["ingest_full_ms_per_frame"] for m in ingest[entry]),
            "policy_ms_per_frame": statistics.median(m["policy_ms_per_frame"] for m in ingest[entry]),
            "ttft_ms": statistics.median(ttft[entry]),
        })
    ref = rows[0]
    for row in rows:
        row["ingest_ratio"] = row["ingest_full_ms_per_frame"] / ref["ingest_full_ms_per_frame"]
        row["ttft_ratio"] = row["ttft_ms"] / ref["ttft_ms"]
    if args.json:
        print(json.dumps({"model": args.model, "frames": args.frames, "budget": args.budget,
                          "tokens_per_frame": sessions[ref["policy"]].tokens_per_frame, "weights": adapter.weights,
                          "rows": rows}))
        return 0
    print(f"{args.model} ({adapter.weights} weights), {args.frames} frames x "
          f"{sessions[ref['policy']].tokens_per_frame} tokens, budget {args.budget}, chunk {args.chunk_frames}; "
          f"median of {args.repeats} streams / "
          f"{args.rounds * len(QUESTIONS)} questions, interleaved; ratios to {ref['policy']}")
    print(f"{'policy':<34} {'ingest ms/f':>11} {'policy ms/f':>11} {'TTFT ms':>8} {'x ingest':>8} {'x TTFT':>7}")
    for r in rows:
        print(f"{r['policy']:<34} {r['ingest_full_ms_per_frame']:>11.2f} {r['policy_ms_per_frame']:>11.2f} "
              f"{r['ttft_ms']:>8.1f} {r['ingest_ratio']:>8.3f} {r['ttft_ratio']:>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
