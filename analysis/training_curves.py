"""The learning curve of an embedded-model training run (``curve.jsonl``), read and drawn.

:func:`plot_curve` is the plotter ``hermes-lab train-embedded`` hands to
:func:`hermes_policy.training.train` for ``curve.png``: the runtime does not import ``analysis``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from analysis.errors import StudyError
from analysis.style import DOUBLE_WIDTH_IN, mpl_rc
from hermes_policy.data.questions import CATEGORIES
from hermes_policy.jsonfile import loads_json

CHANCE = 0.25  # four options


def read_curve(path: Path) -> list[dict]:
    """``curve.jsonl`` rows by step; a resumed run re-logs steps after its checkpoint, and the last wins."""
    rows: dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = loads_json(line, StudyError, f"{path}: a line")
            rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]


def plot_curve(curve: Path, out: Path, title: str = "") -> Path:
    """Training loss and held-out letter accuracy per category (one panel per eval length) as a PNG."""
    rows = read_curve(curve)
    evals = [r for r in rows if "eval" in r]
    lengths = sorted({e["frames"] for r in evals for e in r["eval"]})
    # the object-oriented API: no pyplot state or global backend, as in the rest of analysis
    with matplotlib.rc_context(mpl_rc()):
        fig = Figure(figsize=(DOUBLE_WIDTH_IN, 2.2))
        axes = fig.subplots(1, 1 + len(lengths), squeeze=False)
        ax = axes[0, 0]
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=0.6)
        ax.set(xlabel="step", ylabel="training loss", yscale="log", title=title or "loss")
        for ax, length in zip(axes[0, 1:], lengths):
            for category in CATEGORIES:
                pts = [(r["step"], e[category]) for r in evals for e in r["eval"]
                       if e["frames"] == length and category in e]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=2, lw=0.8, label=category)
            ax.axhline(CHANCE, color="grey", lw=0.5, ls=":")
            ax.set(xlabel="step", ylabel="held-out accuracy", ylim=(0, 1), title=f"{length}-frame clips")
        axes[0, -1].legend(frameon=False)
        fig.tight_layout()
        fig.savefig(out, dpi=150)
    return out


__all__ = ["plot_curve", "read_curve"]
