"""Write chosen figures from their tidy tables, in the paper style.

:func:`analysis.figures.write_figures` draws the four paper figures of a
recording. An interactive view shows its own selection of tables (the
dashboard's study page adds anchor metrics to the depth figure, for one), and
"export what is on screen" must draw exactly those tables. :func:`export_figures`
takes ``name -> table`` and a renderer per name, and writes each figure in
every requested format plus the table itself (parquet + csv), as
``write_figures`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from analysis.errors import StudyError
from analysis.figures import RENDERERS, parse_formats, write_figure


def export_figures(
    tables: Mapping[str, pd.DataFrame],
    out_dir: str | Path,
    formats: str | Sequence[str] = ("pdf", "png", "svg", "html"),
    renderers: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write ``NAME.{fmt}`` for every table and format, and ``NAME.parquet``/``NAME.csv``.

    Args:
        tables: figure name -> its tidy table (as :mod:`analysis.tidy` builds them).
        out_dir: created if missing.
        formats: any of pdf, png, svg (matplotlib) and html (plotly, plotly.js embedded).
        renderers: figure name -> a key of :data:`analysis.figures.RENDERERS`
            (default: the name itself), e.g. ``{"depth_profile": "recency_depth"}``.

    Returns:
        the paths written, figure by figure.
    """
    fmts = parse_formats(formats)
    renderers = dict(renderers or {})
    kinds = {name: renderers.get(name, name) for name in tables}
    unknown = sorted({k for k in kinds.values() if k not in RENDERERS})
    if unknown:
        raise StudyError(f"no renderer named {', '.join(unknown)}; known: {', '.join(RENDERERS)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise StudyError(f"{out} exists and is not a directory; pass a directory for the figures")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, df in tables.items():
        written += write_figure(name, df, RENDERERS[kinds[name]], fmts, out)
    return written


__all__ = ["export_figures"]
