#!/usr/bin/env bash
# Device checks for the day a session has a GPU; a few minutes, ends with a PASS/FAIL summary (exit 1 on any FAIL).
#
#   (a) distributed eval: torchrun on every GPU (NCCL, --device cuda) writes the same results.json accuracies and
#       rows (predictions equal, scores within 1e-4) as one process on a small synthetic dataset;
#   (b) device map: a tiny model split between cuda:0 and the CPU (dry run: CPU and disk) gives the unsplit logits;
#   (c) the oracle tests on CUDA in float32 and bfloat16: streaming equals one forward, unequal eviction equals eager,
#       re-indexed keys equal keys rotated to the new positions, recomputed rows equal eager attention;
#   (d) bench at full size: config:qwen2.5-vl-7b (448x448 frames) and config:llava-ov-7b (384x384) in bf16 at 64 and
#       1024 frames under full, sink-window, rekv and hermes at budget 6000, with TTFT, ingest and peak GPU memory
#       against HERMES's figures (TTFT under 30 ms and flat on LLaVA-OV-7B); targets are reported MET / MISSED,
#       not failed. flash-attn is used when installed (the script says whether it is).
#
#   (e) attention rows: on one layer of the 7B shape (28/4 heads x 128, a 256-row chunk against 6256 keys), the
#       fast path's output (flash-attn when installed, else sdpa) and the rows observers read, against eager
#       attention in float32, in bf16 and fp32;
#   (f) hermes against its floor: config:qwen2.5-vl-7b (448x448) in bf16 at 64 and 1024 frames under sink-window
#       and hermes at budget 6000: TTFT, ingest frames/s, and hermes's ratios to sink-window (reported, not failed);
#   (g) an eval sweep (embedded, sink-window and hermes at two budgets) under torchrun with 2 processes against one
#       process: the same accuracies and predictions, and the wall time of each (on CUDA with 2+ GPUs; with one
#       GPU the two ranks cannot each take a GPU, so it runs on the CPU with gloo and says so).
# (e)-(g) write their numbers into ONE JSON and ONE table: $GPU_CHECK_OUT/gpu-check.json and gpu-check.md
# (default gpu-check-out/, git-ignored), with the PASS/FAIL summary of every check that ran.
#
# Without a GPU it says so and runs a DRY RUN on the CPU: (a) with gloo and 2 processes, (c) on the CPU in both
# dtypes, (d) on the tiny Qwen2.5-VL and LLaVA-OV models at 8 and 32 frames, (e) on a small shape, (f) on the tiny
# Qwen2.5-VL at 8 and 32 frames, (g) on the CPU, so the script itself is exercised on any machine
# (tests/hermes_lab/test_gpu_check_script.py dry-runs (e)-(g)).
# Usage: scripts/gpu-check.sh   (PYTHON=... to pick the interpreter, default .venv; CHECKS=efg to run some checks
# only, default abcdefg; GPU_CHECK_OUT=DIR for the JSON and the table)
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
CHECKS=${CHECKS:-abcdefg}
OUT_DIR=${GPU_CHECK_OUT:-gpu-check-out}
RESULTS=$WORK/results
mkdir -p "$RESULTS" "$OUT_DIR"
export TQDM_DISABLE=1 COLUMNS=200  # no progress bars in the log; help text unwrapped for the grep in (b)

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$GPUS" -gt 0 ]; then
    DEVICE=cuda NPROC=$GPUS BACKEND=nccl  # what hermes_policy.distributed.initialise picks with CUDA present
    echo "== $GPUS GPU(s): torchrun --nproc_per_node $NPROC, --device $DEVICE, backend $BACKEND"
else
    DEVICE=auto NPROC=2 BACKEND=gloo
    echo "== no GPU visible: DRY RUN on the CPU (--device auto falls back to cpu, $NPROC processes, backend $BACKEND)"
fi
if [ "$NPROC" -lt 2 ]; then
    echo "   note: one GPU, so torchrun starts a single rank (WORLD_SIZE 1) and (a) checks only the launch path"
fi

declare -a SUMMARY=()
FAILED=0
SKIPPED=3  # the exit status of a check that had nothing to check

# run a check function in a subshell with errexit on (a function called from `if` would run with it off)
check() {
    local name=$1
    shift
    [[ $CHECKS == *"${name:1:1}"* ]] || return 0  # "(x) ...": run when CHECKS names x
    echo
    echo "== $name"
    set +e
    (set -e; "$@")
    local rc=$?
    set -e
    if [ $rc -eq 0 ]; then
        SUMMARY+=("PASS  $name")
    elif [ $rc -eq "$SKIPPED" ]; then
        SUMMARY+=("SKIP  $name")
    else
        SUMMARY+=("FAIL  $name (exit $rc)")
        FAILED=1
    fi
}

# ------------------------------------------------------------------ (a) distributed eval vs one process
eval_matches_single_process() {
    local args=(--model embedded --policy full,sink-window,hermes --budget-ratio 0.3 --chunk-frames 2
                --device "$DEVICE" --json)
    "$PY" -m hermes_lab data synth --seed 3 --videos 6 --frames 24 --per-category 1 --out "$WORK/qa" >/dev/null
    echo "one process ..."
    timeout 600 "$PY" -m hermes_lab eval --data "$WORK/qa" --out "$WORK/single" "${args[@]}" >/dev/null
    echo "torchrun, $NPROC rank(s) ..."
    timeout 600 "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" \
        -m hermes_lab eval --data "$WORK/qa" --out "$WORK/dist" "${args[@]}" >/dev/null
    "$PY" - "$WORK/single" "$WORK/dist" "$NPROC" <<'PYEOF'
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

single, dist, nproc = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
config = json.loads((dist / "config.json").read_text())
assert config["world_size"] == nproc, f"world_size {config['world_size']} != {nproc}"
print(f"device {config['device']} (rank 0), world_size {config['world_size']}")


def accuracies(folder: Path) -> list:
    return [(r["policy"], r["budget"], r["accuracy"]) for r in json.loads((folder / "results.json").read_text())["results"]]


def numbers(value) -> list[float] | None:
    """A float, or a list of them, as a list; None for anything compared exactly."""
    if isinstance(value, float):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return value
    return None


one, two = accuracies(single), accuracies(dist)
assert one == two, f"accuracies differ: {one} vs {two}"
rows_a, rows_b = (pq.read_table(d / "rows.parquet").to_pylist() for d in (single, dist))
assert len(rows_a) == len(rows_b) > 0, f"{len(rows_a)} vs {len(rows_b)} rows"
worst = 0.0
for a, b in zip(rows_a, rows_b):
    where = f"run {a.get('run')} video {a.get('video_index')} question {a.get('question_index')}"
    for key in a:
        if key == "ttft_ms":  # a timing, never equal
            continue
        x, y = numbers(a[key]), numbers(b[key])
        if x is None or y is None or len(x) != len(y):  # predictions, letters, ids: exactly equal
            assert a[key] == b[key], f"{key} differs on {where}: {a[key]!r} vs {b[key]!r}"
            continue
        # scores, probabilities, KL: ranks run on fewer threads, which reorders float sums
        diff = max(abs(u - v) for u, v in zip(x, y))
        worst = max(worst, diff)
        assert diff <= 1e-4, f"{key} differs by {diff:.2e} on {where}"
print(f"{len(rows_a)} rows: predictions equal, largest score difference {worst:.1e}; accuracies {one}")
PYEOF
}

# ------------------------------------------------------------------ (b) device map
# A tiny model split between cuda:0 and the CPU (dry run: CPU and disk) streams to the logits of the unsplit
# model, under full and hermes (cross-layer smoothing, summary slots) and rekv (offloaded blocks).
device_map_matches_single_device() {
    "$PY" - "$WORK" <<'PYEOF'
import sys
import tempfile

import torch

from hermes_policy.models.placement import Placement, devices_of
from hermes_policy.models.registry import load_model
from hermes_policy.policies import make_policy
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import SyntheticVideo

gpu = torch.cuda.is_available()


def logits(adapter, policy):
    session = StreamingSession(adapter, None if policy == "full" else make_policy(policy, budget=2 * adapter.tokens_per_frame(64, 64)),
                               SessionConfig(chunk_frames=2, reindex="eager"))
    session.ingest(SyntheticVideo(seed=3, frames=8, width=64, height=64).frames())
    return session.question_logits("What colour is the circle?", ["red", "blue"]).cpu(), session


for name in ("tiny-qwen2-vl", "tiny-llava-ov"):
    plain = load_model(name, device="cuda:0" if gpu else "cpu")
    size = sum(p.numel() * p.element_size() for p in plain.model.parameters())
    with tempfile.TemporaryDirectory(dir=sys.argv[1]) as offload:
        caps = {0: int(size * 0.5), "cpu": "4GiB"} if gpu else {"cpu": int(size * 0.6)}
        mapped = load_model(name, placement=Placement(device_map="sequential", max_memory=caps,
                                                      offload_folder=offload))
        where = devices_of(mapped.model)
        assert len(where) == 2, f"{name}: the map did not split the model ({where})"
        for policy in ("full", "hermes", "rekv"):
            a, _ = logits(plain, policy)
            b, session = logits(mapped, policy)
            worst = float((a - b).abs().max())
            assert worst < (1e-3 if gpu else 1e-6), f"{name} {policy}: logits differ by {worst:.2e}"
            print(f"{name} {policy}: split over {where}, kv {session.cache.kv_bytes_by_device}, max |d| {worst:.1e}")
PYEOF
}

# ------------------------------------------------------------------ (c) oracle tests on the device, fp32 and bf16
oracles_on_device() {
    local device=$([ "$GPUS" -gt 0 ] && echo cuda || echo cpu)
    for dtype in float32 bfloat16; do
        echo "oracle tests on $device in $dtype ..."
        HERMES_TEST_DEVICE=$device HERMES_TEST_DTYPE=$dtype timeout 600 "$PY" -m pytest -q -p no:cacheprovider \
            tests/hermes_policy/test_streaming_oracle.py tests/hermes_policy/test_unequal_eviction.py \
            tests/hermes_policy/test_rope.py tests/probes/test_probes.py::test_recomputed_rows_match_eager_attention \
            tests/hermes_policy/test_embedding_probe.py::test_first_layer_equals_the_forward
    done
}

# ------------------------------------------------------------------ (d) full-size bench against HERMES's figures
full_size_bench() {
    "$PY" -c "import flash_attn" 2>/dev/null && echo "flash-attn installed: used for ingest and questions on CUDA" \
        || echo "flash-attn NOT installed: attention runs on sdpa"
    local models frames budget device
    if [ "$GPUS" -gt 0 ]; then
        models="config:qwen2.5-vl-7b@448x448 config:llava-ov-7b@384x384" frames=64,1024 budget=6000 device=cuda
    else
        models="tiny-qwen2.5-vl@56x56 tiny-llava-ov@64x64" frames=8,32 budget=24 device=cpu
    fi
    for entry in $models; do
        local model=${entry%@*} size=${entry#*@}
        echo "bench $model ($size) at $frames frames on $device ..."
        timeout 1200 "$PY" -m hermes_lab bench --model "$model" --dtype bfloat16 --device "$device" \
            --video synthetic:seed=9,frames=64 --frame-size "$size" --frames "$frames" \
            --policies full,sink-window,rekv,hermes --budget "$budget" --ttft-repeats 2 --json > "$WORK/bench.json" \
            2> "$WORK/bench.err" || { tail -5 "$WORK/bench.err"; return 1; }
        "$PY" - "$WORK/bench.json" "$model" <<'PYEOF'
import json
import sys

rows, model = json.load(open(sys.argv[1])), sys.argv[2]
print(f"{'policy':<12} {'frames':>6} {'tok/f':>6} {'TTFT ms':>8} {'ingest f/s':>10} {'GPU GiB':>8} {'KV MiB':>8}")
for r in rows:
    gpu = "-" if r["peak_gpu_bytes"] is None else f"{r['peak_gpu_bytes'] / 2**30:.1f}"
    print(f"{r['policy']:<12} {r['frames']:>6} {r['tokens_per_frame']:>6} {r['ttft_ms']:>8.1f} "
          f"{1000 / r['ingest_ms_per_frame']:>10.1f} {gpu:>8} {r['kv_bytes'] / 2**20:>8.1f}")
by = {(r["policy"], r["frames"]): r for r in rows}
short, long = min(r["frames"] for r in rows), max(r["frames"] for r in rows)
hermes, hermes_short, rekv = by["hermes", long], by["hermes", short], by["rekv", long]
targets = [
    (f"hermes TTFT at {long} frames <= 30 ms (HERMES: under 30 ms on LLaVA-OV-7B, one A800)",
     hermes["ttft_ms"] <= 30, f"{hermes['ttft_ms']:.1f} ms"),
    (f"hermes TTFT flat: {long} frames <= 1.1x {short} frames", hermes["ttft_ms"] <= 1.1 * hermes_short["ttft_ms"],
     f"{hermes['ttft_ms'] / hermes_short['ttft_ms']:.2f}x"),
    (f"rekv / hermes TTFT at {long} frames >= 5x", rekv["ttft_ms"] >= 5 * hermes["ttft_ms"],
     f"{rekv['ttft_ms'] / hermes['ttft_ms']:.1f}x"),
    (f"hermes ingest at {long} frames >= 10 frames/s", 1000 / hermes["ingest_ms_per_frame"] >= 10,
     f"{1000 / hermes['ingest_ms_per_frame']:.1f} frames/s"),
]
for name, met, value in targets:
    print(f"  {'MET   ' if met else 'MISSED'} {model}: {name}: {value}")
PYEOF
    done
}

# ------------------------------------------------------------------ (e) attention rows vs eager
rows_match_eager() {
    local device=cpu shape=small
    [ "$GPUS" -gt 0 ] && device=cuda shape=7b
    for dtype in bfloat16 float32; do
        "$PY" scripts/gpu_check.py rows --device "$device" --dtype "$dtype" --shape "$shape" \
            --out "$RESULTS/e-rows-$dtype.json"
    done
}

# ------------------------------------------------------------------ (f) hermes vs sink-window at 7B
hermes_against_its_floor() {
    local model size frames budget device
    if [ "$GPUS" -gt 0 ]; then
        model=config:qwen2.5-vl-7b size=448x448 frames=64,1024 budget=6000 device=cuda
    else
        model=tiny-qwen2.5-vl size=56x56 frames=8,32 budget=24 device=cpu
    fi
    echo "bench $model ($size) at $frames frames on $device, sink-window and hermes at budget $budget ..."
    timeout 1200 "$PY" -m hermes_lab bench --model "$model" --dtype bfloat16 --device "$device" \
        --video synthetic:seed=9,frames=64 --frame-size "$size" --frames "$frames" \
        --policies sink-window,hermes --budget "$budget" --ttft-repeats 3 --json > "$WORK/floor.json" \
        2> "$WORK/floor.err" || { tail -5 "$WORK/floor.err"; return 1; }
    "$PY" scripts/gpu_check.py bench "$WORK/floor.json" --model "$model" --out "$RESULTS/f-bench.json"
}

# ------------------------------------------------------------------ (g) torchrun sweep vs one process
sweep_against_one_process() {
    local device=cpu
    if [ "$GPUS" -ge 2 ]; then
        device=cuda
    else
        echo "   $GPUS GPU(s): two ranks cannot each take a GPU, so the sweep runs on the CPU (gloo)"
    fi
    "$PY" -m hermes_lab data synth --seed 5 --videos 4 --frames 16 --per-category 1 --out "$WORK/sweep-qa" >/dev/null
    "$PY" scripts/gpu_check.py sweep --data "$WORK/sweep-qa" --work "$WORK" --nproc 2 --device "$device" \
        --eval-args "--model embedded --policy sink-window,hermes --budget-ratio 0.3,0.6 --chunk-frames 2" \
        --out "$RESULTS/g-sweep.json"
}

START=$SECONDS
check "(a) eval: torchrun x$NPROC ($BACKEND) == one process" eval_matches_single_process
check "(b) device map split == unsplit model" device_map_matches_single_device
check "(c) oracle tests on the device, float32 and bfloat16" oracles_on_device
check "(d) full-size bench (targets reported, not failed)" full_size_bench
check "(e) attention rows and output == eager" rows_match_eager
check "(f) hermes vs sink-window at 7B (targets reported, not failed)" hermes_against_its_floor
check "(g) eval sweep: torchrun x2 == one process" sweep_against_one_process

echo
echo "== summary ($((SECONDS - START)) s$([ "$GPUS" -eq 0 ] && echo ', DRY RUN: no GPU, CPU/gloo path only'))"
printf '%s\n' "${SUMMARY[@]}" | tee "$WORK/summary.txt"
FLASH=$("$PY" -c "import flash_attn" 2>/dev/null && echo 1 || echo 0)
"$PY" scripts/gpu_check.py report --results "$RESULTS" --summary "$WORK/summary.txt" --gpus "$GPUS" \
    --flash-attn "$FLASH" --json "$OUT_DIR/gpu-check.json" --table "$OUT_DIR/gpu-check.md" >/dev/null
echo "one JSON: $OUT_DIR/gpu-check.json; one table: $OUT_DIR/gpu-check.md"
exit $FAILED
