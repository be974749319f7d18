"""The ROC figure of every report: an evaluation's one curve, or a grid's curves of every arm and seed overlaid."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from asemble_jax import atomic_io

CHANCE = "chance"  # the gid of the diagonal, so that it can be told from the curves


@dataclasses.dataclass(frozen=True)
class RocCurve:
    labels: np.ndarray  # (n,) 0/1
    probabilities: np.ndarray  # (n,) positive-class probabilities
    label: str | None = None  # legend entry; curves sharing one (an arm's seeds) get a single entry
    colour: str | None = None  # None: matplotlib's next colour


def plot_roc(curves: Sequence[RocCurve], path: str, title: str, *, size: float = 5.0) -> Figure:
    """Writes the curves' ROC (sensitivity against 1 - specificity) over the chance diagonal to `path`; returns
    the figure. A curve whose labels hold one class only has no ROC and is left out."""
    figure = Figure(figsize=(size, size))
    axes = figure.add_subplot()
    in_legend = set()
    for curve in curves:
        if len(np.unique(curve.labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(curve.labels, curve.probabilities)
        label = curve.label if curve.label is not None and curve.label not in in_legend else None
        in_legend.add(label)
        axes.plot(fpr, tpr, color=curve.colour, linewidth=1.0, alpha=0.8, label=label)
    axes.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8, gid=CHANCE)
    axes.set(xlabel="1 − specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), title=title)
    if in_legend - {None}:
        axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    atomic_io.save_figure(figure, path, dpi=120)
    return figure
