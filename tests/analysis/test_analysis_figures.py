"""analysis.figures / analysis.tidy: every figure in every format, plus its tidy data."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import matplotlib
import pandas as pd
import pytest
from PIL import Image

from analysis.derive import derive_tiers, hermes_fixed_tiers
from analysis.errors import StudyError
from analysis.figures import FIGURES, figure_data, parse_formats, write_figures
from analysis.synthetic import hermes_like_recording
from analysis.tidy import AGE_COLUMNS, ANCHOR_COLUMNS, HEAD_TIER_COLUMNS, RECENCY_COLUMNS
from probes.recording import Recording

matplotlib.use("Agg")

L, H, F, P = 8, 3, 12, 8


@pytest.fixture(scope="module")
def rec() -> Recording:
    return hermes_like_recording(L, heads=H, frames=F, positions=P, queries=("local", "global"), noise=0.1)


@pytest.fixture(scope="module")
def written(rec, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    return out, write_figures(rec, out)


def test_every_figure_is_written_in_every_format_with_its_data(written):
    out, paths = written
    expected = {out / f"{name}.{ext}" for name in FIGURES for ext in ("pdf", "png", "svg", "html", "parquet", "csv")}
    assert set(paths) == expected and len(paths) == len(expected)
    for path in paths:
        assert path.stat().st_size > 0, path


def test_files_are_what_their_extension_says(written):
    out, _ = written
    for name in FIGURES:
        with Image.open(out / f"{name}.png") as img:
            img.load()
            assert img.width > 300 and img.height > 200  # 3.3 in at 300 dpi is ~1000 px
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
        assert ET.parse(out / f"{name}.svg").getroot().tag.endswith("svg")
        html = (out / f"{name}.html").read_text()
        # plotly.js is embedded (the page must work offline): no script is fetched from anywhere
        assert re.search(r"<script[^>]*\bsrc\s*=", html) is None
        assert len(html) > 1_000_000 and "Plotly.newPlot" in html


def test_tidy_tables_round_trip_with_expected_shape(written, rec):
    out, _ = written
    shapes = {"age_heatmap": (AGE_COLUMNS, L * F), "recency_depth": (RECENCY_COLUMNS, 2 * L),
              "anchor_profile": (ANCHOR_COLUMNS, 3 * P), "head_tiers": (HEAD_TIER_COLUMNS, L * H)}
    data = figure_data(rec, derive_tiers(rec))
    for name, (columns, rows) in shapes.items():
        parquet = pd.read_parquet(out / f"{name}.parquet")
        csv = pd.read_csv(out / f"{name}.csv")
        assert list(parquet.columns) == columns and len(parquet) == rows, name
        pd.testing.assert_frame_equal(parquet, data[name])
        pd.testing.assert_frame_equal(csv, parquet, check_dtype=False)


def test_tidy_values_carry_the_study(rec):
    data = figure_data(rec, derive_tiers(rec))
    age = data["age_heatmap"]
    assert age.loc[(age.layer == 0) & (age.age == 0), "mass"].item() > age.loc[(age.layer == 7) & (age.age == 0),
                                                                                  "mass"].item()
    anchor = data["anchor_profile"]
    assert sorted(anchor.layer.unique()) == [1, 3, 6]  # the middle layer of each measured tier
    assert anchor.groupby("layer").mass.sum().tolist() == pytest.approx([1.0, 1.0, 1.0])
    deep = anchor[anchor.layer == 6].set_index("position").mass
    assert deep[0] > 0.5 > deep[1:].max()
    rec_depth = data["recency_depth"]
    newest = rec_depth[rec_depth.metric == "newest10"].set_index("layer")
    assert newest.loc[0, "mean"] > newest.loc[7, "mean"]
    assert (newest.head_min <= newest["mean"] + 1e-12).all() and (newest["mean"] <= newest.head_max + 1e-12).all()


def test_explicit_tiers_and_formats(rec, tmp_path):
    paths = write_figures(rec, tmp_path / "new" / "dir", formats="png", tiers=hermes_fixed_tiers(L))
    assert {p.suffix for p in paths} == {".png", ".parquet", ".csv"}
    heads = pd.read_parquet(tmp_path / "new" / "dir" / "head_tiers.parquet")
    assert heads[heads.layer == 0].tier.unique().tolist() == ["sensory"]
    assert heads[heads.layer == 5].tier.unique().tolist() == ["working"]  # 10·5 < 7·8
    assert heads[heads.layer == 6].tier.unique().tolist() == ["long-term"]
    with pytest.raises(StudyError, match="tiers cover 28 layers"):
        write_figures(rec, tmp_path, formats="png", tiers=hermes_fixed_tiers(28))


def test_anchor_profile_is_skipped_without_position_mass(rec, tmp_path):
    stripped = Recording({k: v for k, v in rec.tensors.items() if not k.endswith("position_mass")}, rec.meta)
    paths = write_figures(stripped, tmp_path, formats=("png",))
    assert not any(p.stem == "anchor_profile" for p in paths) and len({p.stem for p in paths}) == 3


def test_parse_formats():
    assert parse_formats("png, PDF,.svg,png") == ("png", "pdf", "svg")
    with pytest.raises(StudyError, match="unknown figure format jpg"):
        parse_formats("png,jpg")
    with pytest.raises(StudyError):
        parse_formats("")
