"""The dashboard loads models with the device map it was launched with; a bad one fails before the server starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard.settings import Settings, parse_args
from hermes_lab.cli import main


def test_device_map_settings_round_trip_to_the_app(tmp_path: Path) -> None:
    settings = Settings(("rec",), "tiny-llava-ov", "synthetic:seed=1,frames=4", str(tmp_path), "sequential",
                        "cpu=1GiB", str(tmp_path / "offload"))
    assert parse_args(settings.to_args()) == settings
    placement = settings.placement()
    assert placement.device_map == "sequential" and placement.max_memory == {"cpu": "1GiB"}
    assert not Settings().placement().mapped


@pytest.mark.parametrize(("args", "match"), [
    (["--device-map", "everywhere"], "device-map"),
    (["--max-memory", "cpu=1GiB"], "give one too"),
])
def test_bad_device_map_is_one_line_before_streamlit_starts(args, match, capsys) -> None:
    assert main(["dashboard", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hermes-lab: error:") and match in err and "Traceback" not in err
