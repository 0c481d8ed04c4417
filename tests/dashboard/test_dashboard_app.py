"""The dashboard's pages under Streamlit's AppTest: widgets change state and the right functions run.

Everything runs on ``tiny-embedded`` and 8–12 frame synthetic streams. Figures
are read back from the plotly JSON the app sends to the browser, so the
assertions are on what a user would see.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from analysis import explore
from dashboard import data, plots
from dashboard.cli import DashboardError, streamlit_command
from dashboard.settings import ENV_ARGS, Settings, parse_args
from hermes_lab.cli import main as cli_main
from hermes_policy.models.tiny import build_tiny
from hermes_policy.policies.spec import PolicySpec
from hermes_policy.video import open_video
from probes.capture import StudyConfig, capture
from probes.recording import TENSORS_FILE, Recording

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
MODEL = "tiny-embedded"
VIDEO = "synthetic:seed=1,frames=8,size=64x64"


# --------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """A real tiny-embedded study: 12 frames, 3 steps of 4, all query kinds, raw rows for 2 steps."""
    out = tmp_path_factory.mktemp("study") / "tiny-study"
    rec = capture(build_tiny(MODEL), open_video("synthetic:seed=2,frames=12,size=64x64"),
                  StudyConfig(queries="both", chunk_frames=4, raw_steps=2), progress=False)
    rec.save(out)
    return out


@pytest.fixture
def runs(tmp_path) -> Path:
    return tmp_path / "runs"


@pytest.fixture(autouse=True)
def fresh_cache():
    # data caches are process-wide; each test starts from nothing (models stay: they are deterministic)
    st.cache_data.clear()
    yield
    st.cache_data.clear()


def launch(monkeypatch, runs: Path, *studies: Path | str, page: str | None = None, model: str = MODEL) -> AppTest:
    args = [f"--study {s}" for s in studies] + [f"--model {model}", f"--video {VIDEO}", f"--runs {runs}"]
    monkeypatch.setenv(ENV_ARGS, " ".join(args))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    no_exception(at)
    return at


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def chart(at: AppTest, key: str) -> dict:
    """The plotly figure JSON of the chart with widget/element key ``key``."""
    for el in at.get("plotly_chart"):
        if el.proto.id.endswith(f"-{key}"):
            return json.loads(el.proto.spec)
    raise AssertionError(f"no chart {key!r}; charts: {[el.proto.id for el in at.get('plotly_chart')]}")


def arr(x) -> np.ndarray:
    """A plotly data array: plain list, or the typed-array form ({dtype, bdata, shape}) plotly sends numpy as."""
    if isinstance(x, dict) and "bdata" in x:
        a = np.frombuffer(base64.b64decode(x["bdata"]), dtype=np.dtype(x["dtype"]))
        shape = x.get("shape")
        return a.reshape([int(s) for s in str(shape).split(",")]) if shape else a
    return np.asarray(x, dtype=float)


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def by_label(widgets, label: str):
    for w in widgets:
        if w.label == label:
            return w
    raise AssertionError(f"no widget {label!r}; have {[w.label for w in widgets]}")


# --------------------------------------------------------------------------- launch settings and CLI
def test_settings_round_trip_and_command_binds_localhost():
    s = Settings(("a", "b c"), "tiny-embedded", VIDEO, "/tmp/r")
    assert parse_args(s.to_args()) == s
    assert parse_args([]) == Settings()
    cmd = streamlit_command(s)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4] == APP
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    assert cmd[cmd.index("--") + 1 :] == s.to_args()
    assert streamlit_command(s, host="0.0.0.0", port=9000)[5:9] == ["--server.address", "0.0.0.0", "--server.port",
                                                                      "9000"]
    with pytest.raises(DashboardError, match="--port"):
        streamlit_command(s, port=70000)
    # a named server address: Streamlit never asks an outside service for this machine's external IP
    wide = streamlit_command(s, host="0.0.0.0")
    assert wide[wide.index("--browser.serverAddress") + 1] not in ("", "0.0.0.0")
    assert cmd[cmd.index("--browser.serverAddress") + 1] == "127.0.0.1"


def test_a_host_beyond_this_machine_is_warned_about(monkeypatch, capsys, tmp_path):
    from dashboard.cli import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")
    monkeypatch.setattr("dashboard.cli.os.execv", lambda path, cmd: None)
    assert cli_main(["dashboard", "--runs", str(tmp_path), "--host", "0.0.0.0"]) == 0
    assert "WARNING: --host 0.0.0.0" in capsys.readouterr().err
    assert cli_main(["dashboard", "--runs", str(tmp_path)]) == 0
    assert "WARNING" not in capsys.readouterr().err


def test_cli_dashboard_command(monkeypatch, capsys, tmp_path):
    calls = []
    monkeypatch.setattr("dashboard.cli.os.execv", lambda path, cmd: calls.append((path, cmd)))
    assert cli_main(["dashboard", "--study", str(tmp_path), "--port", "8611"]) == 0
    ((path, cmd),) = calls
    assert path == cmd[0]
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8611"
    assert parse_args(cmd[cmd.index("--") + 1 :]) == Settings((str(tmp_path),), "embedded")
    assert cli_main(["dashboard", "--port", "0"]) == 2
    assert "hermes-lab: error: --port must be between 1 and 65535" in capsys.readouterr().err


# --------------------------------------------------------------------------- attention explorer
def test_explorer_shows_the_recording(monkeypatch, runs, study_dir):
    at = launch(monkeypatch, runs, study_dir)
    assert at.title[0].value == "Attention explorer"
    assert not errors(at)
    rec = Recording.load(study_dir)
    heat = chart(at, "explore_age_heatmap")["data"][0]
    z = arr(heat["z"])
    np.testing.assert_allclose(z, explore.age_heatmap(rec, "local").numpy(), rtol=1e-6)  # default: first kind, mean
    strip = chart(at, "explore_frame_chart")["data"]
    assert [t["type"] for t in strip] == ["bar", "image"]  # bars over the video's own frames
    np.testing.assert_allclose(arr(strip[0]["y"]), explore.frame_mass(rec, 2, "local", -1).numpy(), rtol=1e-6)
    raw = arr(chart(at, "explore_raw")["data"][0]["z"])
    assert raw.shape[0] == 2  # the bounded raw window: 2 steps
    np.testing.assert_allclose(raw, explore.raw_window(rec, 2, "local").numpy(), rtol=1e-6)
    at.toggle(key="explore_raw_log").set_value(True).run()
    logged = chart(at, "explore_raw")["data"][0]
    with np.errstate(divide="ignore"):
        want = np.where(raw > 0, np.log10(raw), np.nan)  # exact zeros (masked keys) get no colour
    np.testing.assert_allclose(arr(logged["z"]), want, rtol=1e-6)
    assert logged["colorbar"]["title"]["text"] == "log10 attention"
    assert "frame 0" in chart(at, "explore_frame_layers")["layout"]["title"]["text"]


def test_explorer_widgets_select_layer_head_query_step_and_frame(monkeypatch, runs, study_dir):
    at = launch(monkeypatch, runs, study_dir)
    rec = Recording.load(study_dir)
    at.slider(key="explore_layer").set_value(1)
    at.selectbox(key="explore_head").set_value(2)
    at.selectbox(key="explore_query").set_value("global")
    at.select_slider(key="explore_step").set_value(0)
    at.radio(key="explore_heat_steps").set_value("this step only")
    at.run()
    no_exception(at)
    bars = arr(chart(at, "explore_frame_chart")["data"][0]["y"])
    want = explore.frame_mass(rec, 1, "global", 0, 2).numpy()
    np.testing.assert_allclose(bars, want, rtol=1e-6)
    assert np.isnan(bars[4:]).all() and not np.isnan(bars[:4]).any()  # step 0: 4 frames streamed
    z = arr(chart(at, "explore_age_heatmap")["data"][0]["z"])
    np.testing.assert_allclose(z, explore.age_heatmap(rec, "global", 0, 2).numpy(), rtol=1e-6)
    at.number_input(key="explore_frame").set_value(3).run()
    layers = chart(at, "explore_frame_layers")
    assert "frame 3" in layers["layout"]["title"]["text"]
    df = explore.frame_by_layer(rec, 3, "global", 0, 2).sort_values("layer")
    np.testing.assert_allclose(arr(layers["data"][0]["y"]), df["mass"].to_numpy(), rtol=1e-6)
    # a frame not streamed by the chosen step is pulled back to the newest streamed one
    at.number_input(key="explore_frame").set_value(9).run()
    assert at.number_input(key="explore_frame").value == 3
    assert not errors(at)


def test_rerun_that_changes_nothing_computes_nothing(monkeypatch, runs, study_dir):
    counts: dict[str, int] = {}
    for name in ("age_heatmap", "frame_mass", "frame_by_layer", "position_profile", "raw_window"):
        real = getattr(explore, name)

        def counted(*a, _real=real, _name=name, **k):
            counts[_name] = counts.get(_name, 0) + 1
            return _real(*a, **k)

        monkeypatch.setattr(explore, name, counted)
    at = launch(monkeypatch, runs, study_dir)
    first = dict(counts)
    assert set(first) == {"age_heatmap", "frame_mass", "frame_by_layer", "position_profile", "raw_window"}
    at.run()
    no_exception(at)
    assert counts == first
    at.slider(key="explore_layer").set_value(0).run()
    assert counts["age_heatmap"] == first["age_heatmap"] + 1  # a real change does recompute


def test_missing_and_corrupt_recordings_show_errors_and_the_app_goes_on(monkeypatch, runs, study_dir, tmp_path):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(study_dir, corrupt)
    (corrupt / TENSORS_FILE).write_bytes((study_dir / TENSORS_FILE).read_bytes()[:200])
    missing = tmp_path / "nowhere"
    at = launch(monkeypatch, runs, missing, corrupt, study_dir)
    assert any("does not exist" in e for e in errors(at))
    assert not at.get("plotly_chart")
    at.selectbox(key="recording_pick").set_value(str(corrupt)).run()
    no_exception(at)
    assert any("is corrupt" in e for e in errors(at))
    at.switch_page("views/study.py").run()  # the choice follows to the study page, as an error, not a crash
    no_exception(at)
    assert any("is corrupt" in e for e in errors(at))
    at.selectbox(key="recording_pick").set_value(str(study_dir)).run()
    no_exception(at)
    assert not errors(at) and at.get("plotly_chart")


def test_switching_to_a_recording_of_another_shape_keeps_widgets_valid(monkeypatch, runs, study_dir, tmp_path):
    small = tmp_path / "small"
    capture(build_tiny(MODEL), open_video("synthetic:seed=3,frames=6,size=64x64"),
            StudyConfig(queries="pseudo", chunk_frames=2), progress=False).save(small)
    at = launch(monkeypatch, runs, study_dir, small)
    at.selectbox(key="explore_query").set_value("newest-frame")
    at.select_slider(key="explore_step").set_value(2)
    at.run()
    at.selectbox(key="recording_pick").set_value(str(small)).run()
    no_exception(at)
    assert not errors(at)
    assert at.selectbox(key="explore_query").value == "local"  # the new recording has no newest-frame rows
    assert at.select_slider(key="explore_step").value == 2  # of its 3 steps (6 frames, 2 per step)
    bars = arr(chart(at, "explore_frame_chart")["data"][0]["y"])
    assert bars.shape == (6,)
    at.switch_page("views/study.py").run()
    no_exception(at)
    assert at.multiselect(key="study_queries").value == ["local", "global", "mixed"]


def test_no_study_records_one_with_progress(monkeypatch, runs):
    seen = []
    real = data.ProgressSource.frames

    def frames(self):
        for f in real(self):
            seen.append(f.index)
            yield f

    monkeypatch.setattr(data.ProgressSource, "frames", frames)
    at = launch(monkeypatch, runs)  # no --study: the app records the default video at once
    made = data.made_recording_dir(runs, MODEL, VIDEO, StudyConfig(queries="both", chunk_frames=4, raw_steps=4))
    assert (made / "recording.json").is_file()
    assert seen == list(range(8))  # every frame went through the progress source
    assert at.session_state["recording"] == str(made)
    assert chart(at, "explore_age_heatmap")["data"][0]["type"] == "heatmap"
    # record another from the sidebar form: a new folder, selected at once
    at.text_input(key="rec_video").set_value("synthetic:seed=5,frames=6,size=64x64")
    at.number_input(key="rec_raw").set_value(0)
    at.button(key="rec_start").click().run()
    no_exception(at)
    other = data.made_recording_dir(runs, MODEL, "synthetic:seed=5,frames=6,size=64x64",
                                    StudyConfig(queries="both", chunk_frames=4, raw_steps=0))
    assert at.session_state["recording"] == str(other)
    assert Recording.load(other).meta["frames"] == 6
    assert any("kept no raw attention rows" in i.value for i in at.info)


def test_progress_source_reports_each_frame():
    got = []
    src = data.ProgressSource(open_video(VIDEO), lambda done, total: got.append((done, total)))
    assert src.name == open_video(VIDEO).name and src.num_frames == 8
    assert len(list(src.frames())) == 8
    assert got == [(i, 8) for i in range(1, 9)]


def test_wrong_model_is_a_readable_error(monkeypatch, runs):
    at = launch(monkeypatch, runs, model="no-such-model")
    assert at.selectbox(key="model_choice").value == "other (HF id or local path)"
    assert any("unknown model 'no-such-model'" in e for e in errors(at))
    assert at.info  # the page still says what to do
    at.selectbox(key="model_choice").set_value(MODEL)
    at.button(key="rec_start").click().run()  # pick a real one and record
    no_exception(at)
    assert not errors(at) and at.get("plotly_chart")


# --------------------------------------------------------------------------- study & tiers
def test_study_page_specs_side_by_side_and_write(monkeypatch, runs, study_dir, tmp_path):
    at = launch(monkeypatch, runs, study_dir, page="study")
    assert at.title[0].value == "Study & tiers"
    assert not errors(at)
    text = " ".join(m.value for m in at.markdown)
    assert "measured tiers" in text and "hermes-fixed tiers" in text
    (table,) = at.dataframe
    df = table.value
    assert len(df) == 4 and "measured tier" in df and "hermes-fixed tier" in df
    assert df["hermes-fixed tier"].tolist() == ["sensory", "working", "working", "long-term"]
    depth = chart(at, "study_depth")
    from analysis.derive import derive_tiers

    measured = derive_tiers(Recording.load(study_dir))  # by role: a random tiny model has none, so all working
    assert {t.get("name") for t in depth["data"]} >= {"head mean", *measured.layers}
    if measured.no_role:
        assert any("no head role measured" in c.value for c in at.caption)
    # write the measured spec with a chosen budget, then the fixed one
    at.number_input(key="study_budget").set_value(20)
    at.text_input(key="study_spec_path_measured").set_value(str(tmp_path / "measured.json"))
    at.run()
    at.button(key="study_write_spec").click().run()
    no_exception(at)
    spec = PolicySpec.load(tmp_path / "measured.json")
    assert spec.policy == "hermes" and spec.params["budget"] == 20 and len(spec.layers) == 4
    assert spec.source["method"] == "measured"
    assert any("measured.json" in s.value for s in at.success)
    at.radio(key="study_spec_choice").set_value("hermes-fixed").run()
    at.text_input(key="study_spec_path_hermes-fixed").set_value(str(tmp_path / "fixed.json")).run()
    at.button(key="study_write_spec").click().run()
    fixed = PolicySpec.load(tmp_path / "fixed.json")
    assert [e["tier"] for e in fixed.layers] == df["hermes-fixed tier"].tolist()
    # a directory is not a spec path: a readable error
    at.text_input(key="study_spec_path_hermes-fixed").set_value(str(tmp_path)).run()
    at.button(key="study_write_spec").click().run()
    assert any("is a directory" in e for e in errors(at))


def test_study_export_writes_what_is_on_screen(monkeypatch, runs, study_dir, tmp_path):
    at = launch(monkeypatch, runs, study_dir, page="study")
    at.radio(key="study_method").set_value("HERMES fixed (10% / 70%)").run()
    depth = chart(at, "study_depth")
    at.multiselect(key="study_formats").set_value(["png", "html"])
    at.text_input(key="study_fig_dir").set_value(str(tmp_path / "figs")).run()
    at.button(key="study_export").click().run()
    no_exception(at)
    names = {p.name for p in (tmp_path / "figs").iterdir()}
    for fig in ("depth_profile", "head_tiers", "age_heatmap", "anchor_profile"):
        assert {f"{fig}.png", f"{fig}.html", f"{fig}.parquet", f"{fig}.csv"} <= names
    assert (tmp_path / "figs/depth_profile.png").read_bytes()[:4] == b"\x89PNG"
    import pandas as pd

    table = pd.read_parquet(tmp_path / "figs/depth_profile.parquet")
    assert table["tier"].tolist()[:4] == ["sensory", "working", "working", "long-term"]  # the fixed bands chosen
    on_screen = [t for t in depth["data"] if t.get("name") == "head mean"]
    np.testing.assert_allclose(arr(on_screen[0]["y"]), table[table["metric"] == "newest10"]["mean"], rtol=1e-6)
    at.multiselect(key="study_formats").set_value([]).run()
    at.button(key="study_export").click().run()
    assert any("unknown figure format" in e for e in errors(at))


# --------------------------------------------------------------------------- cache occupancy
def test_occupancy_compares_policies(monkeypatch, runs):
    at = launch(monkeypatch, runs, page="occupancy")
    assert at.title[0].value == "Cache occupancy"
    at.multiselect(key="occ_policies").set_value(["full", "sink-window"])
    at.number_input(key="occ_budget").set_value(8).run()  # two frames of 4 tokens
    no_exception(at)
    assert not errors(at)
    full = arr(chart(at, "occ_map_full")["data"][0]["z"])
    window = arr(chart(at, "occ_map_sink-window")["data"][0]["z"])
    assert full.shape == window.shape == (4, 8)
    assert (full == 1).all()
    assert (window[:, 6:] == 1).all() and (window[:, :6] == 0).all()
    table = at.dataframe[0].value
    assert table["run"].tolist() == ["full", "sink-window"] and table["frames_held"].tolist() == [8.0, 2.0]
    kv = chart(at, "occ_kv")["data"]
    assert [t["name"] for t in kv] == ["full", "sink-window"]
    at.select_slider(key="occ_step").set_value(0).run()  # back in time: after the first chunk
    window0 = arr(chart(at, "occ_map_sink-window")["data"][0]["z"])
    assert np.isnan(window0[:, 4:]).all() and (window0[:, 2:4] == 1).all()


def test_occupancy_shows_per_head_lengths_of_a_per_head_run(monkeypatch, runs):
    at = launch(monkeypatch, runs, page="occupancy")
    at.multiselect(key="occ_policies").set_value(["hermes", "hermes-adakv"])
    at.number_input(key="occ_budget").set_value(8).run()
    no_exception(at)
    assert not errors(at)
    heads = arr(chart(at, "occ_heads_hermes-adakv")["data"][0]["z"])
    assert heads.ndim == 2 and heads.shape[1] >= 2  # layers x KV heads
    assert all(c.key != "occ_heads_hermes" for c in at.get("plotly_chart"))  # a per-layer run has none
    assert any("rows per KV head" in c.value for c in at.caption)


def test_occupancy_bad_budget_errors_but_other_runs_show(monkeypatch, runs):
    at = launch(monkeypatch, runs, page="occupancy")
    at.multiselect(key="occ_policies").set_value(["full", "hermes"])
    at.number_input(key="occ_budget").set_value(1).run()
    no_exception(at)
    assert any("cannot hold one frame" in e for e in errors(at))
    assert chart(at, "occ_map_full")["data"][0]["type"] == "heatmap"


def test_occupancy_hermes_summary_slot_and_spec_run(monkeypatch, runs, study_dir, tmp_path):
    from analysis.derive import derive

    spec_path = tmp_path / "spec.json"
    derive(Recording.load(study_dir), "measured", budget=8).save(spec_path)
    at = launch(monkeypatch, runs, page="occupancy")
    at.multiselect(key="occ_policies").set_value(["hermes"])
    at.number_input(key="occ_budget").set_value(8)
    at.text_input(key="occ_spec").set_value(str(spec_path)).run()
    no_exception(at)
    labels = at.dataframe[0].value["run"].tolist()
    assert labels == ["hermes", f"spec: {spec_path}"]
    summary = chart(at, "occ_summary")["data"]
    assert summary and all("layer" in t["name"] for t in summary)
    assert arr(summary[0]["y"])[-1] > 0  # the slot has folded evicted tokens by the end


# --------------------------------------------------------------------------- live stream & ask
def test_live_step_and_ask(monkeypatch, runs):
    at = launch(monkeypatch, runs, page="live")
    assert at.title[0].value == "Live stream & ask"
    at.button(key="live_step").click().run()
    no_exception(at)
    assert by_label(at.metric, "Frames streamed").value == "4 / 8"
    at.text_input(key="live_question").set_value("What is happening?")
    at.button[-1].click().run()  # the form's Ask button
    no_exception(at)
    assert not errors(at)
    live = at.session_state["live_state"]
    (row,) = live.history
    assert row["question"] == "What is happening?" and row["frames"] == 4
    assert row["KV bytes"] == live.session.kv_bytes > 0  # the question was rolled back: the cache is as it was
    assert row["TTFT (ms)"] > 0
    assert by_label(at.metric, "TTFT").value == f"{row['TTFT (ms)']:.1f} ms"
    assert at.dataframe[0].value["question"].tolist() == ["What is happening?"]


def test_live_play_streams_to_the_end(monkeypatch, runs):
    at = launch(monkeypatch, runs, page="live")
    at.toggle(key="live_play").set_value(True).run()  # each run of the playing fragment ingests one chunk
    no_exception(at)
    assert by_label(at.metric, "Frames streamed").value == "4 / 8"
    at.run()
    no_exception(at)
    assert by_label(at.metric, "Frames streamed").value == "8 / 8"
    assert at.toggle(key="live_play").value is False  # stopped at the end
    kv = chart(at, "live_kv")["data"][0]
    assert arr(kv["x"]).tolist() == [4, 8]


def test_live_rejects_a_bad_upload_and_an_early_question(monkeypatch, runs):
    at = launch(monkeypatch, runs, page="live")
    at.text_input(key="live_question").set_value("Anything?")
    at.button[-1].click().run()
    assert any("no frame has been streamed yet" in e for e in errors(at))
    at.radio(key="live_kind").set_value("upload a file").run()
    at.file_uploader(key="live_upload").set_value(("broken.mp4", b"this is not a video", "video/mp4")).run()
    no_exception(at)
    (err,) = errors(at)
    assert "broken.mp4" in err and "not a readable video" in err
    assert not [b for b in at.button if b.key == "live_step"]  # nothing to stream from a rejected file


def test_save_upload_checks_name_and_content(runs):
    from analysis.errors import StudyError

    with pytest.raises(StudyError, match="not a video file"):
        data.save_upload(runs, "notes.txt", b"x")
    with pytest.raises(StudyError, match="empty"):
        data.save_upload(runs, "a.mp4", b"")
    p = data.save_upload(runs, "clip.MP4", b"abc")
    assert p.suffix == ".mp4" and p.read_bytes() == b"abc"
    assert data.save_upload(runs, "again.mp4", b"abc") == p.with_suffix(".mp4")


# --------------------------------------------------------------------------- tier methods and planted models
PLANTED = "planted:0,family=embedded"


def test_tier_methods_offer_roles_change_points_and_fixed_with_roles_the_default(monkeypatch, runs, study_dir):
    from analysis.derive import derive_tiers
    from dashboard.study import METHODS

    assert list(METHODS.values()) == ["roles", "changepoint", "hermes-fixed"]  # the first is the default
    at = launch(monkeypatch, runs, study_dir, page="study")
    assert at.radio(key="study_method").value == "measured (roles)"
    assert any("Tiers by **measured head roles**" in c.value for c in at.caption)
    rec = Recording.load(study_dir)
    for label, method in METHODS.items():
        at.radio(key="study_method").set_value(label).run()
        no_exception(at)
        assert not errors(at)
        want = derive_tiers(rec, method).head_tiers(rec.num_heads)
        got = arr(chart(at, "study_head_tiers")["data"][0]["z"])
        assert got.tolist() == [[["sensory", "working", "long-term"].index(t) for t in row] for row in want]
    ref = data.recording_ref(study_dir)
    assert data.tier_method(ref) == "roles" and data.tiers(ref).method == "roles"  # the explorer's default too
    text = " ".join(m.value for m in at.markdown)
    assert "**measured tiers** (roles): " in text and "**hermes-fixed tiers**: " in text


def test_recording_without_position_mass_shows_change_point_tiers(monkeypatch, runs, study_dir, tmp_path):
    from analysis.derive import derive_tiers, format_ranges

    full = Recording.load(study_dir)
    old = tmp_path / "no-position-mass"
    Recording({k: v for k, v in full.tensors.items() if "position_mass" not in k}, dict(full.meta)).save(old)
    at = launch(monkeypatch, runs, old, page="study")
    assert not errors(at)
    assert at.radio(key="study_method").value == "measured (roles)"
    notes = " ".join(c.value for c in at.caption)
    assert "Tiers by **change points (depth-ordered)**" in notes and "no in-frame position mass" in notes
    rec = Recording.load(old)
    want = derive_tiers(rec, "changepoint")
    text = " ".join(m.value for m in at.markdown)
    assert f"**measured tiers** (changepoint): {want.summary()}" in text
    assert format_ranges(want.runs()) == want.summary()
    got = arr(chart(at, "study_head_tiers")["data"][0]["z"])
    assert got.tolist() == [[["sensory", "working", "long-term"].index(t) for t in row]
                            for row in want.head_tiers(rec.num_heads)]
    assert "Planted ground truth" not in [s.value for s in at.subheader]  # tiny-embedded: no truth to show
    # the measured spec falls back too, and says so
    at.text_input(key="study_spec_path_measured").set_value(str(tmp_path / "m.json")).run()
    at.button(key="study_write_spec").click().run()
    no_exception(at)
    spec = PolicySpec.load(tmp_path / "m.json")
    assert spec.source["method"] == "changepoint" and [e["tier"] for e in spec.layers] == list(want.layers)


def _agreement(rec: Recording, method: str = "roles") -> tuple[float, float]:
    """The share of planted layer tiers and head roles recovered, computed here from the library."""
    from analysis.derive import derive_tiers
    from hermes_policy.models.planted import ROLE_TIER, parse_planted_name

    truth = parse_planted_name(rec.meta["model"]).ground_truth()
    t = derive_tiers(rec, method)
    layers = [t.layers[i] == k for i, k in enumerate(truth["layers"]) if k != "diffuse"]
    heads = t.head_tiers(rec.num_heads)
    hs = [heads[i][h] == ROLE_TIER[r] for i, row in enumerate(truth["roles"]) for h, r in enumerate(row)
          if r != "diffuse"]
    return sum(layers) / len(layers), sum(hs) / len(hs)


def test_planted_model_from_the_picker_records_and_shows_its_ground_truth(monkeypatch, runs):
    at = launch(monkeypatch, runs, model=PLANTED)  # no --study: a study of the planted model is recorded
    assert at.selectbox(key="model_choice").value == PLANTED  # a ready option, not "other"
    assert {"planted:0,family=qwen2-vl", "planted:0,family=llava-ov"} <= set(at.selectbox(key="model_choice").options)
    assert not errors(at)
    made = data.made_recording_dir(runs, PLANTED, VIDEO, StudyConfig(queries="both", chunk_frames=4, raw_steps=4))
    rec = Recording.load(made)
    assert rec.meta["model"] == PLANTED
    at.switch_page("views/study.py").run()
    no_exception(at)
    assert not errors(at)
    assert "Planted ground truth" in [s.value for s in at.subheader]
    layer_share, head_share = _agreement(rec)
    assert by_label(at.metric, "Layer tiers recovered").value == f"{layer_share:.0%}"
    assert by_label(at.metric, "Head roles recovered").value == f"{head_share:.0%}"
    fig = chart(at, "study_truth")
    truth, measured = fig["data"]
    from hermes_policy.models.planted import parse_planted_name

    cfg = parse_planted_name(PLANTED)
    assert arr(truth["z"]).shape == arr(measured["z"]).shape == (cfg.num_layers, cfg.num_heads + 1)
    kinds = ["sensory", "working", "long-term", "no role"]
    assert [kinds[int(z)] for z in arr(truth["z"])[:, 0]] == [k if k != "diffuse" else "no role" for k in cfg.layers]
    # the comparison follows the tier method picked
    at.radio(key="study_method").set_value("HERMES fixed (10% / 70%)").run()
    no_exception(at)
    assert by_label(at.metric, "Layer tiers recovered").value == f"{_agreement(rec, 'hermes-fixed')[0]:.0%}"


def test_planted_model_typed_in_other_records_and_notes_its_tier_map(monkeypatch, runs):
    name = "planted:3,family=embedded"  # a planted layer out of depth order
    at = launch(monkeypatch, runs, model=MODEL, page="study")
    at.selectbox(key="model_choice").set_value("other (HF id or local path)").run()
    assert "planted:SEED" in at.text_input(key="model_other").label
    at.text_input(key="model_other").set_value(name).run()
    at.button(key="rec_start").click().run()
    no_exception(at)
    assert not errors(at)
    rec = Recording.load(at.session_state["recording"])
    assert rec.meta["model"] == name
    assert by_label(at.metric, "Layer tiers recovered").value == f"{_agreement(rec)[0]:.0%}"
    from analysis.derive import derive_tiers, out_of_order

    t = derive_tiers(rec)
    text = " ".join(m.value for m in at.markdown)
    assert f"**measured tiers** (roles): {t.summary()}" in text  # runs, e.g. "working 0,4", when out of order
    notes = " ".join(c.value for c in at.caption)
    assert ("out of depth order" in notes) == bool(out_of_order(t.layers))
    assert ("no head role measured" in notes) == bool(t.no_role)
    assert name in notes  # the truth's caption names the model


def test_compare_truth_scores_layers_and_heads_with_a_role():
    from analysis.derive import TierAssignment

    truth = {"layers": ["diffuse", "sensory", "working", "long-term"],
             "roles": [["diffuse", "diffuse"], ["recency", "diffuse"], ["mixed", "anchor"], ["anchor", "anchor"]]}
    t = TierAssignment(("long-term", "sensory", "sensory", "long-term"),
                       (("sensory", "sensory"), ("sensory", "working"), ("working", "sensory"),
                        ("long-term", "working")), method="roles")
    cmp = data.compare_truth(truth, t)
    assert cmp.layer_agreement == (2, 3)  # the diffuse layer is not scored
    assert cmp.head_agreement == (3, 5)  # recency->sensory, mixed->working, anchor->long-term; diffuse heads left out
    assert cmp.layers["match"].tolist()[1:] == [True, False, True]
    fig = plots.truth_vs_measured(cmp.layers, cmp.heads, "roles")
    assert [list(r) for r in fig.data[1].text] == [["", "", ""], ["", "", ""], ["✗", "", "✗"], ["", "", "✗"]]
    from analysis.errors import StudyError

    with pytest.raises(StudyError, match="3 layers but the recording has 4"):
        data.compare_truth({"layers": ["sensory"] * 3, "roles": [["recency"]] * 3}, t)
