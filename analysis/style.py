"""One paper style for every figure, in matplotlib and in plotly.

* one sequential colour map (viridis: perceptually uniform, colour-blind safe,
  survives greyscale printing); plotly gets the *same* colours, sampled from
  matplotlib, so a PDF and its HTML twin match;
* one tier palette (Okabe–Ito, colour-blind safe) used for every tier mark;
* single-column sizes (3.3 in wide) and 8 pt fonts, readable at print size.
"""

from __future__ import annotations

from typing import Any

from matplotlib import colormaps
from matplotlib.colors import ListedColormap, to_hex

COLUMN_WIDTH_IN = 3.3
DOUBLE_WIDTH_IN = 6.9
FONT_SIZE = 8
FONT_FAMILY = "DejaVu Sans"  # ships with matplotlib, so PDFs embed the same face everywhere
PNG_DPI = 300
PX_PER_IN = 96  # plotly sizes are CSS pixels

CMAP_NAME = "viridis"
TIER_COLORS: dict[str, str] = {"sensory": "#E69F00", "working": "#56B4E9", "long-term": "#009E73"}
TIER_ALPHA = 0.18  # for shaded tier bands behind data


def cmap():
    """The shared sequential matplotlib colour map."""
    return colormaps[CMAP_NAME]


def tier_cmap() -> ListedColormap:
    """A discrete map over tier indices 0, 1, 2 (sensory, working, long-term)."""
    return ListedColormap(list(TIER_COLORS.values()), name="tiers")


def plotly_colorscale(samples: int = 11) -> list[list[Any]]:
    """The shared colour map as a plotly colorscale (sampled from matplotlib, so both match)."""
    m = cmap()
    return [[i / (samples - 1), to_hex(m(i / (samples - 1)))] for i in range(samples)]


def mpl_rc() -> dict[str, Any]:
    """rcParams for :func:`matplotlib.rc_context` around building and saving a figure."""
    return {
        "font.family": FONT_FAMILY,
        "font.size": FONT_SIZE,
        "axes.titlesize": FONT_SIZE,
        "axes.labelsize": FONT_SIZE,
        "xtick.labelsize": FONT_SIZE - 1,
        "ytick.labelsize": FONT_SIZE - 1,
        "legend.fontsize": FONT_SIZE - 1,
        "legend.frameon": False,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.linewidth": 0.6,
        "lines.linewidth": 1.2,
        "image.cmap": CMAP_NAME,
        "pdf.fonttype": 42,  # TrueType, so text stays editable in the PDF
        "svg.fonttype": "none",
        "savefig.bbox": "tight",
        "savefig.pad_inches": 0.02,
    }


def plotly_layout(height_in: float, width_in: float = COLUMN_WIDTH_IN, title: str | None = None) -> dict[str, Any]:
    """Layout settings for a plotly figure of the same size and type as the matplotlib one."""
    return {
        "width": int(width_in * PX_PER_IN * 2),  # HTML is viewed on screens: twice the print size
        "height": int(height_in * PX_PER_IN * 2),
        "font": {"family": f"{FONT_FAMILY}, Arial, sans-serif", "size": FONT_SIZE * 2},
        "template": "simple_white",
        "margin": {"l": 60, "r": 20, "t": 40 if title else 20, "b": 50},
        **({"title": {"text": title}} if title else {}),
    }
