"""The dashboard's entry script: ``streamlit run dashboard/app.py -- [--study DIR ...] [--model M] ...``.

Use ``hermes-lab dashboard`` (:mod:`dashboard.cli`), which binds 127.0.0.1 and
passes the arguments. The sidebar (model selector) is shared; each page is a
script under ``views/`` that calls its module's ``render()``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard import ui
from dashboard.settings import from_environment

HERE = Path(__file__).parent
PAGES = (
    ("views/attention.py", "Attention explorer", "attention", ":material/grid_on:"),
    ("views/study.py", "Study & tiers", "study", ":material/stacked_line_chart:"),
    ("views/occupancy.py", "Cache occupancy", "occupancy", ":material/memory:"),
    ("views/live.py", "Live stream & ask", "live", ":material/play_circle:"),
    ("views/results.py", "Results", "results", ":material/leaderboard:"),
)


def main() -> None:
    st.set_page_config(page_title="hermes-lab", layout="wide")
    st.session_state[ui.SETTINGS_KEY] = from_environment(__file__)
    pages = [st.Page(str(HERE / path), title=title, url_path=url, icon=icon, default=i == 0)
             for i, (path, title, url, icon) in enumerate(PAGES)]
    nav = st.navigation(pages)
    with st.sidebar:
        st.markdown("**hermes-lab**: attention, tiers and memory of streaming-video LLMs")
        ui.model_picker()
    nav.run()


main()
