"""The contribution sections of a factorial grid's tables (TableSpec.contributions: the model switches whose
every combination was trained): per test set and metric, each component's exact Shapley contribution with its
paired patient-bootstrap interval, the leave-one-out difference beside it, the pairwise Shapley interaction
indices, Holm and Benjamini-Hochberg over the section's family, and the power of the AUC contributions.

The game (evaluation/contributions.py): v(S) is the metric of the variant whose switches S are on, averaged over
the seeds every variant has; a coalition with no branch (none, or SE alone) is valued at chance, the fair coin of
contributions.CHANCE. Each bootstrap resample draws the test patients once, with the same seed, so the same draws,
as the table of differences, and recomputes every variant's metric, then the contributions, on it.

The leave-one-out column is full − (full without the component), the table of differences' Δ with its sign
turned, so that it reads in the same direction as the contribution: what the component adds on top of all the
others. The Shapley value averages what it adds over every context instead.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from asemble_jax.evaluation import contributions as shapley, multiplicity, power as power_lib
from asemble_jax.evaluation.bootstrap import PairedDifference
from asemble_jax.grids.grid import TableSpec
from asemble_jax.grids.tables import (METRIC_LABELS, POWER_METRIC, POWER_TARGET, Table, _number, _p, _same_examples,
                                      _scores, latex_table, markdown_table, power_text, run_metrics)
from asemble_jax.models.registry import factorial_variants

COMPONENT_LABELS = {"use_wide_resnet": "wide-residual branch", "use_convnext": "ConvNeXt branch",
                    "use_vit": "ViT branch", "use_se": "SE (modules and fusion gate)"}
SHAPLEY, INTERACTION = "shapley", "interaction"


@dataclasses.dataclass
class ContributionTable:
    players: tuple[str, ...]
    metrics: tuple[str, ...]
    seeds: tuple[Any, ...]  # the seeds every variant has; v(S) averages over them
    results: dict[str, shapley.Contributions]  # metric ->
    leave_one_out: dict[str, dict[str, PairedDifference]]  # player -> metric -> full − without the player
    power: dict[str, power_lib.Power]  # player -> power of its POWER_METRIC contribution
    adjusted: dict[tuple[str, str, str], tuple[float, float]]  # (metric, kind, name) -> (Holm, BH q)


def coalition_variants(players: Sequence[str]) -> list[str | None]:
    """Per coalition mask over `players`, the factorial variant with exactly those switches on; None for the
    coalitions without a branch (valued at chance)."""
    names: list[str | None] = [None] * 2 ** len(players)
    for name, overrides in factorial_variants().items():
        names[shapley.coalition_mask([overrides.get(p, True) for p in players])] = name
    return names


def _pair_name(pair: tuple[str, str]) -> str:
    return " x ".join(pair)


def compute(table: Table, spec: TableSpec, *, n_resamples: int, seed: int) -> ContributionTable | str:
    """The contribution section of one table, or the reason it cannot be made yet (variants not done)."""
    players = tuple(spec.contributions)
    names = coalition_variants(players)
    needed = [n for n in names if n is not None]
    missing = [n for n in needed if not table.runs.get(n)]
    if missing:
        return f"not every variant has a finished seed yet (missing: {', '.join(missing)})"
    seeds = tuple(sorted(set.intersection(*(set(table.runs[n]) for n in needed)), key=str))
    if not seeds:
        return "the variants share no finished seed yet"
    metrics = tuple(m for m in spec.metrics if m in shapley.CHANCE)
    runs = {n: [table.runs[n][s] for s in seeds] for n in needed}
    examples = _same_examples([run for per_seed in runs.values() for run in per_seed], "contributions")
    patients, clusters = np.unique(examples.patients, return_inverse=True)

    def value_tables(weights: np.ndarray) -> dict[str, np.ndarray]:
        scored = {n: [_scores(run, weights, clusters) for run in per_seed] for n, per_seed in runs.items()}
        chance = np.ones(weights.shape[0])
        return {m: np.stack([chance * shapley.CHANCE[m] if n is None else np.mean([s[m] for s in scored[n]], axis=0)
                             for n in names]) for m in metrics}

    results = shapley.paired_contributions(value_tables, players, patients.size, n_resamples=n_resamples, seed=seed)

    power = {}
    if POWER_METRIC in results:
        per_seed = np.stack([shapley.shapley_values(np.array([
            shapley.CHANCE[POWER_METRIC] if n is None else run_metrics(table.runs[n][s])[POWER_METRIC]
            for n in names])) for s in seeds])
        power = {p: power_lib.grid_power(per_seed[:, i], results[POWER_METRIC].shapley[p].bootstrap_variance,
                                         target=POWER_TARGET) for i, p in enumerate(players)}

    rows = {row.arm: row for row in table.rows}
    full_mask = 2 ** len(players) - 1
    leave_one_out = {}
    for i, player in enumerate(players):
        row = rows.get(names[full_mask ^ 1 << i])
        leave_one_out[player] = {m: dataclasses.replace(d, difference=-d.difference, low=-d.high, high=-d.low)
                                 for m, d in (row.difference.items() if row else ()) if m in metrics}

    keys = [(m, SHAPLEY, p) for m in metrics for p in players]
    keys += [(m, INTERACTION, _pair_name(pair)) for m in metrics for pair in results[m].interactions]
    p_values = [_estimate(results, key).p_value for key in keys]
    adjusted = {key: (float(h), float(q)) for key, h, q in
                zip(keys, multiplicity.holm(p_values), multiplicity.benjamini_hochberg(p_values))}
    return ContributionTable(players, metrics, seeds, results, leave_one_out, power, adjusted)


def _estimate(results: dict[str, shapley.Contributions], key: tuple[str, str, str]) -> shapley.Estimate:
    metric, kind, name = key
    if kind == SHAPLEY:
        return results[metric].shapley[name]
    return next(e for pair, e in results[metric].interactions.items() if _pair_name(pair) == name)


# ---- rendering ------------------------------------------------------------------------------------------------

def caption(contributions: ContributionTable, table: Table, spec: TableSpec) -> str:
    n_family = len(contributions.adjusted)
    labels = ", ".join(METRIC_LABELS[m] for m in contributions.metrics)
    components = ", ".join(COMPONENT_LABELS.get(p, p) for p in contributions.players)
    text = (f"Test set: {table.evaluated_on} ({table.n_patients} patients). Exact Shapley contribution of each "
            f"component ({components}) over the {2 ** len(contributions.players)} coalitions of the factorial: "
            f"v(S) = the metric of the variant with exactly the components S, averaged over seeds "
            f"{', '.join(map(str, contributions.seeds))}; the two coalitions without a branch (none, SE alone) are "
            "valued at chance, a fair coin (AUC, sensitivity, specificity and accuracy 0.5). The contributions sum "
            "to v(full) − chance. 95% percentile interval and two-sided p-value (of 0) from a paired patient "
            f"bootstrap ({contributions.results[contributions.metrics[0]].n_resamples} resamples, the same draws as "
            "the table of differences): each resample draws the test patients once and recomputes every variant's "
            "metric and then the contributions on it. Leave-one-out: full − (full without the component), the "
            "table's Δ with its sign turned. Interactions: the Shapley interaction index (Grabisch & Roubens 1999), "
            "the second difference v(S+i+j) − v(S+i) − v(S+j) + v(S) averaged over the contexts S with Shapley "
            "weights; > 0: the two add more together than apart; with pairwise interactions only, a component's "
            f"contribution is its own effect plus half of each of its interactions. Multiplicity: Holm p and "
            f"Benjamini-Hochberg q over one family, this section's {n_family} p-values "
            f"({len(contributions.players)} contributions and {len(contributions.results[contributions.metrics[0]].interactions)} "
            f"interactions x {len(contributions.metrics)} metrics: {labels}) on this test set only.")
    text += power_text(list(contributions.power.values()), label=f"contribution to {METRIC_LABELS[POWER_METRIC]}",
                       what="components")
    if spec.budget:
        text += f" Training budget: {spec.budget}"
    return text


def _signed(value: float, minus: str) -> str:
    text = _number(value)
    return ("0.000" if text == "-0.000" else text).replace("-", minus)  # a sign turned on 0 is still 0


def _interval(estimate: float, low: float, high: float, p: float, adjusted: tuple[float, float] | None,
              minus: str) -> str:
    text = f"{_signed(estimate, minus)} [{_signed(low, minus)}, {_signed(high, minus)}] p={_p(p)}"
    return text + ("" if adjusted is None else f", Holm {_p(adjusted[0])}, q {_p(adjusted[1])}")


def _contribution_rows(contributions: ContributionTable, minus: str) -> tuple[list[str], list[list[str]]]:
    header = ["component"]
    for m in contributions.metrics:
        header += [f"Shapley {METRIC_LABELS[m]} [95% CI] p, Holm, q", f"leave-one-out {METRIC_LABELS[m]} [95% CI]"]
    rows = []
    for player in contributions.players:
        cells = [COMPONENT_LABELS.get(player, player)]
        for m in contributions.metrics:
            e = contributions.results[m].shapley[player]
            cells.append(_interval(e.estimate, e.low, e.high, e.p_value, contributions.adjusted[(m, SHAPLEY, player)],
                                   minus))
            d = contributions.leave_one_out[player].get(m)
            cells.append("–" if d is None else
                         f"{_signed(d.difference, minus)} [{_signed(d.low, minus)}, {_signed(d.high, minus)}]")
        rows.append(cells)
    return header, rows


def _interaction_rows(contributions: ContributionTable, minus: str) -> tuple[list[str], list[list[str]]]:
    header = ["pair"] + [f"interaction {METRIC_LABELS[m]} [95% CI] p, Holm, q" for m in contributions.metrics]
    rows = []
    for pair in contributions.results[contributions.metrics[0]].interactions:
        cells = [" × ".join(COMPONENT_LABELS.get(p, p) for p in pair)]
        for m in contributions.metrics:
            e = contributions.results[m].interactions[pair]
            cells.append(_interval(e.estimate, e.low, e.high, e.p_value,
                                   contributions.adjusted[(m, INTERACTION, _pair_name(pair))], minus))
        rows.append(cells)
    return header, rows


def markdown(contributions: ContributionTable) -> str:
    return "\n".join(markdown_table(header, rows)
                     for header, rows in (_contribution_rows(contributions, "−"), _interaction_rows(contributions, "−")))


def latex(contributions: ContributionTable, caption_text: str, label: str) -> str:
    blocks = []
    for kind, (header, rows) in ((SHAPLEY, _contribution_rows(contributions, "−")),
                                 (INTERACTION, _interaction_rows(contributions, "−"))):
        what = "Shapley contributions" if kind == SHAPLEY else "pairwise interactions"
        blocks.append(latex_table(header, rows, f"{what}. {caption_text}", f"{label}_{kind}"))
    return "\n".join(blocks)


CSV_HEADER = ("group", "role", "kind", "name", "metric", "estimate", "ci_low", "ci_high", "p", "p_holm", "q_bh",
              "seeds", "seed_variance", "patient_variance", "min_detectable", f"seeds_for_{POWER_TARGET}")


def csv_rows(sections: Sequence[tuple[Table, ContributionTable]]) -> list[list[Any]]:
    """Long form, unrounded (tables.to_csv writes it): kind shapley / interaction / leave_one_out, one row per name
    and metric; the leave-one-out rows' Holm and q belong to the table of differences' family (tables.csv)."""
    rows = []
    for table, contributions in sections:
        group = " / ".join(str(v) for _, v in table.group)
        seeds = " ".join(map(str, contributions.seeds))
        for m in contributions.metrics:
            for player in contributions.players:
                e = contributions.results[m].shapley[player]
                pw = contributions.power.get(player) if m == POWER_METRIC else None
                rows.append([group, table.role, SHAPLEY, player, m, e.estimate, e.low, e.high, e.p_value,
                             *contributions.adjusted[(m, SHAPLEY, player)], seeds,
                             *(["", "", "", ""] if pw is None else
                               [pw.seed_variance, pw.patient_variance, pw.minimum_detectable, pw.seeds_needed])])
                d = contributions.leave_one_out[player].get(m)
                if d is not None:
                    rows.append([group, table.role, "leave_one_out", player, m, d.difference, d.low, d.high,
                                 d.p_value, "", "", seeds, "", "", "", ""])
            for pair, e in contributions.results[m].interactions.items():
                rows.append([group, table.role, INTERACTION, _pair_name(pair), m, e.estimate, e.low, e.high,
                             e.p_value, *contributions.adjusted[(m, INTERACTION, _pair_name(pair))], seeds,
                             "", "", "", ""])
    return rows
