"""Figures of a grid's tables: each arm's paired difference from the reference with its interval, and ROC curves
of every arm's runs overlaid."""
from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from asemble_jax import atomic_io
from asemble_jax.grids.factorial import COMPONENT_LABELS, ContributionTable
from asemble_jax.grids.grid import TableSpec
from asemble_jax.grids.tables import METRIC_LABELS, Table
from asemble_jax.evaluation.figures import RocCurve, plot_roc as roc_figure


def plot_differences(table: Table, spec: TableSpec, path: str, title: str) -> None:
    """One panel per metric: a bar per arm at its Δ from the reference, whiskers at its 95% interval."""
    rows = [row for row in table.rows if row.difference]
    figure = Figure(figsize=(2.6 * len(spec.metrics) + 1.2, 0.45 * max(len(rows), 1) + 1.6))
    panels = figure.subplots(1, len(spec.metrics), sharey=True, squeeze=False)[0]
    positions = np.arange(len(rows))
    for axes, metric in zip(panels, spec.metrics):
        differences = [row.difference[metric] for row in rows]
        values = np.array([d.difference for d in differences])
        errors = np.array([[d.difference - d.low for d in differences], [d.high - d.difference for d in differences]])
        colours = ["tab:red" if d.high < 0 else "tab:green" if d.low > 0 else "tab:grey" for d in differences]
        axes.barh(positions, np.nan_to_num(values), xerr=np.nan_to_num(errors), color=colours, capsize=3)
        axes.axvline(0, color="black", linewidth=0.8)
        axes.set(xlabel=f"Δ {METRIC_LABELS[metric]}", yticks=positions,
                 yticklabels=[row.arm for row in rows])
        axes.invert_yaxis()
    figure.suptitle(f"{title}: {spec.arm} − {spec.reference} (95% CI; red/green: interval excludes 0)",
                    fontsize="medium")
    figure.tight_layout()
    atomic_io.save_figure(figure, path, dpi=120)


def plot_roc(table: Table, path: str, title: str) -> Figure:
    """Every run's ROC curve, one colour per arm (its seeds as separate curves)."""
    curves = [RocCurve(predictions.labels, predictions.probabilities,
                       f"{row.arm} (mean AUC {row.mean.get('auc', math.nan):.3f})", f"C{i % 10}")
              for i, row in enumerate(table.rows) for predictions in table.runs[row.arm].values()]
    return roc_figure(curves, path, title)


def plot_contributions(contributions: ContributionTable, path: str, title: str) -> None:
    """One panel per metric: each component's Shapley contribution (bar, 95% CI whiskers) with its leave-one-out
    difference (black diamond); a last panel: the matrix of pairwise interactions of the first metric."""
    players, metrics = contributions.players, contributions.metrics
    figure = Figure(figsize=(2.8 * len(metrics) + 3.4, 0.5 * len(players) + 1.9))
    panels = figure.subplots(1, len(metrics) + 1, squeeze=False)[0]
    positions = np.arange(len(players))
    for axes, metric in zip(panels, metrics):
        shapley = [contributions.results[metric].shapley[p] for p in players]
        values = np.array([e.estimate for e in shapley])
        # A percentile interval need not hold its point estimate (bootstrap bias): whiskers stop at the bar then.
        errors = np.clip([[e.estimate - e.low for e in shapley], [e.high - e.estimate for e in shapley]], 0, None)
        colours = ["tab:red" if e.high < 0 else "tab:green" if e.low > 0 else "tab:grey" for e in shapley]
        axes.barh(positions, np.nan_to_num(values), xerr=np.nan_to_num(errors), color=colours, capsize=3)
        loo = [contributions.leave_one_out[p].get(metric) for p in players]
        axes.plot([math.nan if d is None else d.difference for d in loo], positions, "kD", markersize=4,
                  label="leave-one-out")
        axes.axvline(0, color="black", linewidth=0.8)
        axes.set(xlabel=f"Shapley {METRIC_LABELS[metric]}", yticks=positions,
                 yticklabels=[COMPONENT_LABELS.get(p, p) if axes is panels[0] else "" for p in players])
        axes.invert_yaxis()
    panels[0].legend(fontsize="x-small", loc="lower right")
    metric = metrics[0]
    matrix = np.full((len(players), len(players)), np.nan)
    for (a, b), estimate in contributions.results[metric].interactions.items():
        i, j = players.index(a), players.index(b)
        matrix[i, j] = matrix[j, i] = estimate.estimate
    axes = panels[-1]
    bound = max(np.nanmax(np.abs(matrix)), 1e-9)
    axes.imshow(matrix, cmap="coolwarm", vmin=-bound, vmax=bound)
    for i in range(len(players)):
        for j in range(len(players)):
            if i != j:
                axes.text(j, i, f"{matrix[i, j]:+.3f}", ha="center", va="center", fontsize="x-small")
    short = [p.removeprefix("use_") for p in players]
    axes.set(xticks=range(len(players)), yticks=range(len(players)), yticklabels=short,
             title=f"interactions, {METRIC_LABELS[metric]}")
    axes.set_xticklabels(short, rotation=45, ha="right")
    axes.tick_params(labelsize="x-small")
    figure.suptitle(f"{title}: Shapley contributions (95% CI; red/green: interval excludes 0)", fontsize="medium")
    figure.tight_layout()
    atomic_io.save_figure(figure, path, dpi=120)
