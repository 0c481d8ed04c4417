"""The Results page: eval and bench folders as figures, filtered; found under the runs folder or given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from planted_results import eval_dir
from streamlit.testing.v1 import AppTest

from dashboard.results import discover
from dashboard.settings import ENV_ARGS, Settings, parse_args
from hermes_lab.cli import main

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


def bench_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    rows = [{"model": "m", "policy": p, "frames": n, "budget": 8, "ttft_ms": 1.0 + n / 10, "kv_bytes": n * 1024,
             "ingest_ms_per_frame": 2.0, "policy_ms_per_frame": 0.1} for p in ("full", "hermes") for n in (8, 32)]
    pd.DataFrame(rows).to_parquet(path / "rows.parquet")
    return path


def results_page(monkeypatch, runs: Path, *args: str) -> AppTest:
    monkeypatch.setenv(ENV_ARGS, " ".join([f"--runs {runs}", "--model tiny-embedded", *args]))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/results.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def chart_ids(at: AppTest) -> list[str]:
    return [el.proto.id.rsplit("-", 1)[-1] for el in at.get("plotly_chart")]


def test_folders_under_runs_are_found_and_drawn(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    eval_dir(runs / "qa" / "eval", "model-a", 1)
    bench_dir(runs / "bench")
    assert discover(runs) == ([str(runs / "qa" / "eval")], [str(runs / "bench")])
    at = results_page(monkeypatch, runs)
    ids = chart_ids(at)
    assert {"accuracy_budget", "accuracy_kv", "fidelity", "pareto", "bench_ttft", "bench_kv",
            "bench_ingest"} <= {i.removeprefix("results_") for i in ids}
    table = next(df for df in at.dataframe if "accuracy" in df.value.columns).value
    assert ((table["lo"] <= table["accuracy"]) & (table["accuracy"] <= table["hi"])).all()
    # filter: one category, one policy; the full cache stays as the reference
    at.multiselect(key="results_categories").set_value(["overall"]).run()
    at.multiselect(key="results_policies").set_value(["hermes"]).run()
    table = next(df for df in at.dataframe if "accuracy" in df.value.columns).value
    assert set(table["category"]) == {"overall"} and set(table["run"]) == {"full", "hermes@0.1", "hermes@0.3"}


def test_dashboard_eval_option_opens_a_folder_and_refuses_a_bad_one(tmp_path, monkeypatch, capsys):
    folder = eval_dir(tmp_path / "elsewhere", "model-b", 2)
    s = Settings(evals=(str(folder),), benches=())
    assert parse_args(s.to_args()) == s
    at = results_page(monkeypatch, tmp_path / "empty-runs", f"--eval {folder}")
    assert at.multiselect(key="results_evals").value == [str(folder)]
    assert json.loads((folder / "results.json").read_text())["comparisons"]
    assert any("delta" in df.value.columns for df in at.dataframe)
    code = main(["dashboard", "--eval", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no finished evaluation" in err


def test_no_results_says_how_to_make_them(tmp_path, monkeypatch):
    at = results_page(monkeypatch, tmp_path / "none")
    assert any("hermes-lab eval --out" in i.value for i in at.info)


def test_a_replay_with_the_questions_chunks_is_the_cache_the_question_saw():
    """eval flushes a partial chunk before each question; the drill-down's replay does the same, so the cache it
    shows at the question is the very cache the question was asked against."""
    from analysis.occupancy import held_shares, run_occupancy
    from hermes_policy.models.tiny import build_tiny
    from hermes_policy.policies import make_policy
    from hermes_policy.session import SessionConfig, StreamingSession
    from hermes_policy.video import SyntheticVideo

    tiny = build_tiny("tiny-embedded")
    frames = list(SyntheticVideo(seed=3, frames=12, width=64, height=64).frames())
    budget = 3 * tiny.tokens_per_frame(64, 64)
    session = StreamingSession(tiny, make_policy("hermes", budget=budget), SessionConfig(chunk_frames=4))
    session.ingest(frames[:6])
    session.ask("What is there?", max_new_tokens=1)  # flushes frames 4-5 as a chunk of 2
    held = held_shares(session.cache, len(frames), session.tokens_per_frame)  # (L, F) what each layer held
    replay = run_occupancy(tiny, make_policy("hermes", budget=budget), frames, 4, flush_after=(6,))
    step = list(replay.frames).index(6)
    assert list(replay.tokens[step]) == session.cache.lengths()
    np.testing.assert_array_equal(np.nan_to_num(replay.held[step][:, :6], nan=-1), np.nan_to_num(held[:, :6], nan=-1))
    assert np.nanmin(held[:, :6]) < 1, "the budget made hermes evict: the comparison is not trivially all-held"
    plain = run_occupancy(tiny, make_policy("hermes", budget=budget), frames, 4)
    assert 6 not in list(plain.frames), "without the question's flush the stream never stops at frame 6"
