"""The tables of a grid workdir: per arm (ablation variant or model), mean +- SD over seeds of each metric; the
paired difference from the reference arm with its 95% interval and p-value (a bootstrap over test patients,
pooled over seeds); McNemar and DeLong p-values against the reference for baseline grids; size, FLOPs and
training speed. Markdown, CSV and LaTeX.

Only finished cells' records (cell.json) and their test predictions (eval/*_predictions.csv) are read, so tables
can be made while a grid still runs; a seed counts for an arm once all its cells (all folds) are done.

The pooled paired bootstrap: all runs of a table are scored on the same test examples. Each resample draws test
patients with replacement (a weight per patient: how often it was drawn); for every seed that both arms have,
the metric of the arm's run and of the reference's run of that seed are computed on that same resample, and their
differences are averaged over seeds. The 2.5 and 97.5 percentiles of that average over the resamples are the
interval; the p-value is two-sided, 2 * min(P*(d <= 0), P*(d >= 0)), as evaluation.bootstrap.paired_bootstrap
defines it. Seed-to-seed variation enters through the average; patient-to-patient variation through the
resampling; slices of one patient are never treated as independent.

Multiplicity (issue 14): each table is one family, all of its Δ p-values (every arm against the reference, every
metric, on that one test set); beside each p-value stand its Holm-adjusted p and its Benjamini-Hochberg q
(evaluation/multiplicity.py). Power: the header gives the smallest Δ AUC the grid could detect and the seeds a Δ AUC
of 0.01 would need, from each comparison's seed-to-seed variance and patient-bootstrap variance
(evaluation/power.py). Factorial grids add contribution sections (grids/factorial.py).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from asemble_jax import storage
from asemble_jax.grids import cell as cell_lib
from asemble_jax.grids.grid import CLASSIFICATION, Grid, TableSpec
from asemble_jax.workdir import GridWorkdir
from asemble_jax.errors import InputError, UserError
from asemble_jax.evaluation.bootstrap import (Interval, PairedDifference, check_level, patient_resample_counts,
                                           percentile_interval, two_sided_p_value)
from asemble_jax.evaluation.comparisons import DeLongResult, McNemarResult, delong_test, mcnemar, mcnemar_table
from asemble_jax.evaluation import multiplicity, power as power_lib
from asemble_jax.evaluation.metrics import METRIC_NAMES, weighted_metrics

METRIC_LABELS = {"auc": "AUC", "accuracy": "accuracy", "f1": "F1", "recall": "sensitivity",
                 "specificity": "specificity", "precision": "precision"}
COST_LABELS = {"params": "params", "gflops": "GFLOPs", "train_images_per_second": "train img/s"}
THRESHOLDS = ("0.5", "youden")
POWER_METRIC, POWER_TARGET = "auc", 0.01  # the header's power statement: which Δ, and which Δ the seeds are for


class TableError(UserError, ValueError):
    """Results that cannot be tabulated as asked."""


@dataclasses.dataclass(frozen=True)
class Predictions:
    """One run's scored test examples. `thresholds` is per example: pooled folds each bring their own."""
    labels: np.ndarray
    probabilities: np.ndarray
    patients: np.ndarray
    thresholds: np.ndarray

    @classmethod
    def concatenate(cls, parts: Sequence[Predictions]) -> Predictions:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))

    def decisions(self) -> np.ndarray:
        return (self.probabilities >= self.thresholds).astype(int)


def read_predictions(path: str, threshold: float) -> Predictions:
    """evaluation.evaluate's _predictions.csv (example, patient_id, label, probability)."""
    try:
        with storage.open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        labels = np.array([int(r["label"]) for r in rows])
        probabilities = np.array([float(r["probability"]) for r in rows])
        patients = np.array([r["patient_id"] for r in rows])
    except FileNotFoundError:
        raise InputError(path, "predictions file missing") from None
    except (KeyError, ValueError) as error:
        raise InputError(path, f"not a predictions CSV (example, patient_id, label, probability): {error}") from None
    return Predictions(labels, probabilities, patients, np.full(labels.shape, threshold))


def _scores(predictions: Predictions, weights: np.ndarray, clusters: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric per row of `weights`: decisions at each example's own threshold (probability - threshold >= 0
    has the sign of probability >= threshold exactly in floating point), AUC from the probabilities."""
    decided = weighted_metrics(predictions.labels, predictions.probabilities - predictions.thresholds, weights, 0.0,
                               clusters)
    ranked = weighted_metrics(predictions.labels, predictions.probabilities, weights, 0.5, clusters)
    return {**{name: decided[name] for name in METRIC_NAMES}, "auc": ranked["auc"]}


def run_metrics(predictions: Predictions) -> dict[str, float]:
    n = predictions.labels.size
    return {name: float(v[0]) for name, v in _scores(predictions, np.ones((1, n)), np.arange(n)).items()}


def _same_examples(runs: Iterable[Predictions], where: str) -> Predictions:
    runs = list(runs)
    first = runs[0]
    for other in runs[1:]:
        if not (np.array_equal(first.labels, other.labels) and np.array_equal(first.patients, other.patients)):
            raise TableError(f"{where}: runs were scored on different test examples; a paired comparison needs the "
                             "same examples in the same order")
    return first


def paired_differences(arm: Mapping[Any, Predictions], reference: Mapping[Any, Predictions],
                       metrics: Sequence[str], *, n_resamples: int = 2000, level: float = 0.95, seed: int = 0,
                       where: str = "table") -> dict[str, PairedDifference]:
    """metric(arm) - metric(reference), averaged over the seeds both have, with the pooled paired bootstrap over
    patients (module docstring). Empty when they share no seed."""
    return _paired_resampled(arm, reference, metrics, n_resamples=n_resamples, level=level, seed=seed,
                             where=where)[0]


def _paired_resampled(arm: Mapping[Any, Predictions], reference: Mapping[Any, Predictions],
                      metrics: Sequence[str], *, n_resamples: int, level: float, seed: int,
                      where: str) -> tuple[dict[str, PairedDifference], dict[str, np.ndarray]]:
    """paired_differences, and each metric's resampled differences (for the power statement)."""
    check_level(level, n_resamples)
    seeds = sorted(set(arm) & set(reference), key=str)
    if not seeds:
        return {}, {}
    examples = _same_examples([*(arm[s] for s in seeds), *(reference[s] for s in seeds)], where)
    patients, clusters = np.unique(examples.patients, return_inverse=True)
    n_patients = patients.size

    def averaged(weights: np.ndarray) -> dict[str, np.ndarray]:
        total = {name: np.zeros(weights.shape[0]) for name in metrics}
        for s in seeds:
            arm_scores, reference_scores = _scores(arm[s], weights, clusters), _scores(reference[s], weights, clusters)
            for name in metrics:
                total[name] += arm_scores[name] - reference_scores[name]
        return {name: value / len(seeds) for name, value in total.items()}

    estimate = averaged(np.ones((1, n_patients)))
    # All resamples in one chunk, as the committed tables were made: the same counts in any chunking, and one
    # chunk also keeps every matrix product the same shape, so the tables reproduce to the last bit.
    (weights,) = patient_resample_counts(n_patients, n_resamples, seed, chunk_rows=n_resamples)
    resampled = averaged(weights)
    results = {}
    for name in metrics:
        low, high, n_valid = percentile_interval(resampled[name], level)
        results[name] = PairedDifference(name, float(estimate[name][0]), low, high,
                                         two_sided_p_value(resampled[name]), level, n_valid, int(n_patients))
    return results, resampled


def seed_averaged_intervals(runs: Mapping[Any, Predictions], metrics: Sequence[str], *, n_resamples: int = 2000,
                            level: float = 0.95, seed: int = 0, where: str = "table") -> dict[str, Interval]:
    """Each metric of one arm averaged over its seeds, with the percentile interval of that average under the
    pooled patient bootstrap of paired_differences: each resample draws test patients once and scores every
    seed's run on them. With one seed, this is evaluation.bootstrap.bootstrap_metrics's interval of that run."""
    check_level(level, n_resamples)
    examples = _same_examples(runs.values(), where)
    patients, clusters = np.unique(examples.patients, return_inverse=True)

    def averaged(weights: np.ndarray) -> dict[str, np.ndarray]:
        scored = [_scores(run, weights, clusters) for run in runs.values()]
        return {name: np.mean([s[name] for s in scored], axis=0) for name in metrics}

    estimate = averaged(np.ones((1, patients.size)))
    (weights,) = patient_resample_counts(patients.size, n_resamples, seed, chunk_rows=n_resamples)
    resampled = averaged(weights)
    intervals = {}
    for name in metrics:
        low, high, n_valid = percentile_interval(resampled[name], level)
        intervals[name] = Interval(float(estimate[name][0]), low, high, level, n_valid, int(patients.size))
    return intervals


@dataclasses.dataclass
class ArmRow:
    arm: str
    seeds: tuple[Any, ...]  # complete seeds (every fold done)
    mean: dict[str, float]
    sd: dict[str, float]  # sample SD over seeds (NaN with one seed)
    difference: dict[str, PairedDifference]  # vs the reference; empty for the reference itself
    mcnemar: dict[Any, McNemarResult]  # per seed, vs the reference's run of the same seed
    delong: dict[Any, DeLongResult]
    costs: dict[str, float | None]
    adjusted: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)  # metric -> (Holm, BH q)
    power: power_lib.Power | None = None  # of its Δ POWER_METRIC


def bootstrap_variance(resampled: np.ndarray) -> float:
    """Variance over the finite bootstrap resamples (NaN below two)."""
    finite = resampled[np.isfinite(resampled)]
    return float(np.var(finite, ddof=1)) if finite.size > 1 else math.nan


def adjust(rows: Sequence[ArmRow]) -> None:
    """Holm and BH over the family of every Δ p-value of these rows (one table), stored in row.adjusted."""
    keys = [(row, m) for row in rows for m, d in row.difference.items()]
    p = [row.difference[m].p_value for row, m in keys]
    for (row, m), h, q in zip(keys, multiplicity.holm(p), multiplicity.benjamini_hochberg(p)):
        row.adjusted[m] = (float(h), float(q))


@dataclasses.dataclass
class Table:
    group: tuple[tuple[str, Any], ...]
    role: str
    evaluated_on: str
    n_examples: int
    n_patients: int
    rows: list[ArmRow]
    runs: dict[str, dict[Any, Predictions]]  # arm -> seed -> pooled predictions, for the ROC figure
    pooled: bool = False  # whether a run is the concatenation of several cells (cross-validation folds)


def compute_rows(runs: Mapping[str, Mapping[Any, Predictions]], costs: Mapping[str, Mapping[str, float | None]],
                 spec: TableSpec, *, n_resamples: int = 2000, seed: int = 0, where: str = "table") -> list[ArmRow]:
    """One row per arm (reference first, then in the given order) from each arm's per-seed predictions."""
    reference = runs.get(spec.reference, {})
    rows = []
    for arm in sorted(runs, key=lambda a: a != spec.reference):
        per_seed = runs[arm]
        scored = [run_metrics(p) for p in per_seed.values()]
        mean = {m: float(np.mean([s[m] for s in scored])) for m in spec.metrics}
        sd = {m: float(np.std([s[m] for s in scored], ddof=1)) if len(scored) > 1 else math.nan for m in spec.metrics}
        row = ArmRow(arm, tuple(per_seed), mean, sd, {}, {}, {}, dict(costs.get(arm, {})))
        if arm != spec.reference:
            if "paired_bootstrap" in spec.tests:
                row.difference, resampled = _paired_resampled(per_seed, reference, spec.metrics,
                                                              n_resamples=n_resamples, level=0.95, seed=seed,
                                                              where=where)
                if POWER_METRIC in resampled:
                    shared = sorted(set(per_seed) & set(reference), key=str)
                    per_seed_delta = [run_metrics(per_seed[s])[POWER_METRIC] - run_metrics(reference[s])[POWER_METRIC]
                                      for s in shared]
                    row.power = power_lib.grid_power(per_seed_delta, bootstrap_variance(resampled[POWER_METRIC]),
                                                     target=POWER_TARGET)
            for s in sorted(set(per_seed) & set(reference), key=str):
                a, b = per_seed[s], reference[s]
                _same_examples([a, b], where)
                if "mcnemar" in spec.tests:
                    row.mcnemar[s] = mcnemar(mcnemar_table(a.labels, a.decisions(), b.decisions()))
                if "delong" in spec.tests:
                    row.delong[s] = delong_test(a.labels, a.probabilities, b.probabilities)
        rows.append(row)
    adjust(rows)
    return rows


@dataclasses.dataclass
class Collected:
    grid: Grid
    records: list[dict[str, Any]]  # every cell record found (done and failed)
    tables: list[Table]
    incomplete: list[str]  # arm/seed combinations with some but not all cells done


def collect(workdir: str, grid: Grid, *, threshold: str = "0.5", n_resamples: int = 2000,
            seed: int = 0) -> Collected:
    """Reads the finished cells of `grid` in `workdir` and computes one table per group and test-set role."""
    if threshold not in THRESHOLDS:
        raise TableError(f"threshold must be one of {', '.join(THRESHOLDS)}, got {threshold!r}")
    spec = grid.table
    records, done = [], {}
    for cell in grid.cells:
        record = cell_lib.read_record(GridWorkdir(workdir).cell(cell.name).root)
        if record is not None:
            records.append(record)
            if record["status"] == cell_lib.DONE:
                done[cell.name] = record
    # (group, role) -> arm -> seed -> [(pooled factor values, predictions)], and which cells a seed needs.
    parts: dict[tuple, dict[str, dict[Any, list]]] = {}
    expected: dict[tuple, int] = {}
    evaluated_on: dict[tuple, list[str]] = {}
    for cell in grid.cells:
        group = spec.group_of(cell.factors)
        arm, replicate = cell.factors[spec.arm], cell.factors[spec.replicate]
        for evaluation in cell.evaluations:
            if evaluation.kind != CLASSIFICATION:
                continue  # localisation has a section of its own (grids/publish.py)
            key = (group, evaluation.role)
            expected[(key, arm, replicate)] = expected.get((key, arm, replicate), 0) + 1
            where = f"{evaluation.dataset}:{evaluation.split}"
            evaluated_on.setdefault(key, [])
            if where not in evaluated_on[key]:
                evaluated_on[key].append(where)
            if cell.name not in done:
                continue
            entry = next((e for e in done[cell.name]["evaluations"] if e["role"] == evaluation.role), None)
            if entry is None:
                raise TableError(f"{cell.name}: its record has no '{evaluation.role}' evaluation; was it run by "
                                 "another version of the grid?")
            predictions = read_predictions(GridWorkdir(workdir).cell(cell.name).path(entry["predictions"]),
                                           entry["thresholds"][threshold])
            pooled = tuple(cell.factors.get(f) for f in spec.pooled)
            parts.setdefault(key, {}).setdefault(arm, {}).setdefault(replicate, []).append((pooled, predictions))

    tables, incomplete = [], []
    for key, arms in parts.items():
        group, role = key
        runs: dict[str, dict[Any, Predictions]] = {}
        for arm, seeds in arms.items():
            for replicate, pieces in seeds.items():
                if len(pieces) < expected[(key, arm, replicate)]:
                    incomplete.append(f"{_group_name(group, role)}: {spec.arm}={arm} {spec.replicate}={replicate} "
                                      f"({len(pieces)} of {expected[(key, arm, replicate)]} cells done)")
                    continue
                pieces.sort(key=lambda piece: piece[0])  # fold order
                runs.setdefault(arm, {})[replicate] = Predictions.concatenate([p for _, p in pieces])
        if not runs:
            continue
        costs = {arm: _arm_costs([done[c.name] for c in grid.cells if c.name in done
                                  and spec.group_of(c.factors) == group and c.factors[spec.arm] == arm])
                 for arm in runs}
        where = _group_name(group, role)
        rows = compute_rows(runs, costs, spec, n_resamples=n_resamples, seed=seed, where=where)
        any_run = next(iter(next(iter(runs.values())).values()))
        tables.append(Table(group, role, ", ".join(evaluated_on[key]), int(any_run.labels.size),
                            int(np.unique(any_run.patients).size), rows, runs,
                            pooled=any(expected[(key, arm, r)] > 1 for arm in arms for r in arms[arm])))
    return Collected(grid, records, tables, incomplete)


def _arm_costs(records: list[dict[str, Any]]) -> dict[str, float | None]:
    rates = [r["train_images_per_second"] for r in records if r.get("train_images_per_second") is not None]
    first = records[0] if records else {}
    return {"params": first.get("params"), "gflops": first.get("gflops"),
            "train_images_per_second": float(np.mean(rates)) if rates else None}


def _group_name(group: Sequence[tuple[str, Any]], role: str) -> str:
    return ", ".join([*(str(value) for _, value in group), role])


def slug(table: Table) -> str:
    text = "_".join([*(str(value) for _, value in table.group), table.role])
    return "".join(c if c.isalnum() else "_" for c in text)


# ---- rendering ------------------------------------------------------------------------------------------------

def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _p(p: float) -> str:
    return "–" if not math.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _cost(name: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{int(value):,}" if name == "params" else f"{value:.3g}" if name == "gflops" else f"{value:.0f}"


def caption(table: Table, spec: TableSpec, *, threshold: str, n_resamples: int) -> str:
    decision = ("threshold 0.5" if threshold == "0.5" else
                "each run's Youden threshold, chosen on its own validation split")
    text = (f"Test set: {table.evaluated_on} ({table.n_examples} slices, {table.n_patients} patients). Mean ± "
            f"sample SD over seeds; decisions at {decision}; sensitivity = recall. Δ = {spec.arm} − "
            f"{spec.reference}: the per-seed paired difference averaged over the seeds both rows have, with its 95% "
            f"percentile interval and two-sided p-value from a paired bootstrap over test patients ({n_resamples} "
            "resamples): each resample draws patients with replacement, scores each seed's two runs on the same "
            "drawn patients and averages their differences over seeds.")
    if table.pooled:
        text += (f" Each run pools the held-out predictions of its {'/'.join(spec.pooled)} cells "
                 "(cross-validation) before scoring.")
    if "mcnemar" in spec.tests or "delong" in spec.tests:
        text += (f" McNemar (exact binomial below 25 discordant slices, else chi-square with continuity correction) "
                 f"on decisions and DeLong on AUC, per seed against {spec.reference} of the same seed; both treat "
                 "slices as independent, which the patient bootstrap does not.")
    if any(row.difference for row in table.rows):
        text += family_text(table, spec) + power_text([row.power for row in table.rows])
    if spec.budget:
        text += f" Training budget: {spec.budget}"
    text += (" Params include BatchNorm statistics; GFLOPs: XLA's count for one forward pass at the cells' input "
             "size; train img/s: median over the logged windows after the first (which includes compilation), mean "
             "over the arm's cells, on the machine that ran them.")
    return text


def family_text(table: Table, spec: TableSpec) -> str:
    compared = [row for row in table.rows if row.difference]
    n = sum(len(row.difference) for row in compared)
    labels = ", ".join(METRIC_LABELS[m] for m in spec.metrics)
    return (f" Multiplicity: Holm-adjusted p (family-wise error) and Benjamini-Hochberg q (false discovery rate) "
            f"over one family, this table's {n} Δ p-values ({len(compared)} {spec.arm}s vs {spec.reference} x "
            f"{len(spec.metrics)} metrics: {labels}) on {table.evaluated_on} only; each other table is its own "
            "family.")


def _count(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.0f}"


def power_text(powers: Sequence[power_lib.Power | None], label: str = f"Δ {METRIC_LABELS[POWER_METRIC]}",
               what: str = "comparisons") -> str:
    """The header's power statement over the comparisons' (or contributions') Power of POWER_METRIC."""
    powers = [p for p in powers if p is not None and math.isfinite(p.minimum_detectable)]
    if not powers:
        return f" Power of {label}: not estimable (it needs at least two seeds)."
    detectable = [p.minimum_detectable for p in powers]
    needed = [p.seeds_needed for p in powers]
    seeds = sorted({p.seeds for p in powers})
    infinite = sum(math.isinf(n) for n in needed)
    text = (f" Power (two-sided α = {power_lib.ALPHA}, power {power_lib.POWER}, normal approximation; SE² = "
            "seed-to-seed variance of the per-seed statistic / seeds + patient-bootstrap variance of the "
            f"seed-averaged one): the smallest {label} these {'/'.join(map(str, seeds))} seeds could detect is "
            f"{_number(float(np.median(detectable)))} (median over the {len(powers)} {what}; range "
            f"{_number(min(detectable))} to {_number(max(detectable))})")
    limit = (f"the sampling of the test patients alone leaves more variance than ({POWER_TARGET} / "
             f"{power_lib.z_sum():.2f})², so more test patients, not more seeds, are what it takes")
    if infinite == len(powers):
        return text + f"; to detect {POWER_TARGET}, no number of seeds suffices for any of them: {limit}."
    text += (f"; to detect {POWER_TARGET} would take {_count(float(np.median(needed)))} seeds (median; range "
             f"{_count(min(needed))} to {_count(max(needed))})")
    if infinite:
        text += f", and for {infinite} of the {len(powers)} no number of seeds suffices: {limit}"
    return text + "."


def _columns(spec: TableSpec) -> list[str]:
    columns = [spec.arm, "seeds", *(METRIC_LABELS[m] for m in spec.metrics)]
    if "paired_bootstrap" in spec.tests:
        columns += [f"Δ {METRIC_LABELS[m]} [95% CI] p, Holm, q" for m in spec.metrics]
    if "mcnemar" in spec.tests:
        columns.append("McNemar p per seed")
    if "delong" in spec.tests:
        columns.append("DeLong p per seed")
    return columns + [COST_LABELS[c] for c in spec.costs]


def _cells(row: ArmRow, spec: TableSpec, *, minus: str = "−", pm: str = "±") -> list[str]:
    def signed(value: float) -> str:
        return _number(value).replace("-", minus)

    cells = [row.arm, str(len(row.seeds))]
    cells += [f"{_number(row.mean[m])} {pm} {_number(row.sd[m])}" for m in spec.metrics]
    if "paired_bootstrap" in spec.tests:
        for m in spec.metrics:
            d = row.difference.get(m)
            cells.append("–" if d is None else
                         f"{signed(d.difference)} [{signed(d.low)}, {signed(d.high)}] p={_p(d.p_value)}"
                         + _adjusted(row.adjusted.get(m)))
    if "mcnemar" in spec.tests:
        cells.append(", ".join(_p(r.p_value) for r in row.mcnemar.values()) or "–")
    if "delong" in spec.tests:
        cells.append(", ".join(_p(r.p_value) for r in row.delong.values()) or "–")
    return cells + [_cost(c, row.costs.get(c)) for c in spec.costs]


def _adjusted(adjusted: tuple[float, float] | None) -> str:
    return "" if adjusted is None else f", Holm {_p(adjusted[0])}, q {_p(adjusted[1])}"


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table; every table the project publishes goes through this one and latex_table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def markdown(table: Table, spec: TableSpec) -> str:
    return markdown_table(_columns(spec), (_cells(row, spec) for row in table.rows))


_LATEX_ESCAPES = {"_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "±": r"$\pm$", "Δ": r"$\Delta$", "−": "$-$",
                  "–": "--", "<": r"$<$", "×": r"$\times$", "∞": r"$\infty$", "α": r"$\alpha$", "²": r"$^2$"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(c, c) for c in text)


def latex_table(columns: Sequence[str], rows: Iterable[Sequence[str]], caption_text: str, label: str) -> str:
    lines = [r"\begin{table}[t]", r"\centering", r"\scriptsize", r"\begin{tabular}{l" + "r" * (len(columns) - 1) + "}",
             r"\toprule", " & ".join(_latex_escape(c) for c in columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_escape(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + _latex_escape(caption_text) + "}",
              r"\label{tab:" + label + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def latex(table: Table, spec: TableSpec, caption_text: str, label: str) -> str:
    return latex_table(_columns(spec), (_cells(row, spec) for row in table.rows), caption_text, label)


CSV_COLUMNS = ("group", "role", "arm", "n_seeds", "seeds")


def csv_rows(tables: Sequence[Table], spec: TableSpec) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of the long-form CSV: one row per table and arm, numbers unrounded."""
    header = list(CSV_COLUMNS)
    for m in spec.metrics:
        header += [f"{m}_mean", f"{m}_sd"]
    if "paired_bootstrap" in spec.tests:
        for m in spec.metrics:
            header += [f"delta_{m}", f"delta_{m}_ci_low", f"delta_{m}_ci_high", f"delta_{m}_p", f"delta_{m}_p_holm",
                       f"delta_{m}_q_bh"]
        header += [f"delta_{POWER_METRIC}_seed_variance", f"delta_{POWER_METRIC}_patient_variance",
                   f"delta_{POWER_METRIC}_min_detectable", f"delta_{POWER_METRIC}_seeds_for_{POWER_TARGET}"]
    header += list(spec.costs)
    rows = []
    for table in tables:
        for row in table.rows:
            values: list[Any] = [" / ".join(str(v) for _, v in table.group), table.role, row.arm, len(row.seeds),
                                 " ".join(str(s) for s in row.seeds)]
            for m in spec.metrics:
                values += [row.mean[m], row.sd[m]]
            if "paired_bootstrap" in spec.tests:
                for m in spec.metrics:
                    d = row.difference.get(m)
                    values += (["", "", "", "", "", ""] if d is None else
                               [d.difference, d.low, d.high, d.p_value, *row.adjusted.get(m, ("", ""))])
                pw = row.power
                values += (["", "", "", ""] if pw is None else
                           [pw.seed_variance, pw.patient_variance, pw.minimum_detectable, pw.seeds_needed])
            values += ["" if row.costs.get(c) is None else row.costs[c] for c in spec.costs]
            rows.append(values)
    return header, rows


def paired_test_rows(tables: Sequence[Table]) -> tuple[list[str], list[list[Any]]]:
    """Long-form per-seed McNemar and DeLong results of baseline tables."""
    header = ["group", "role", "arm", "seed", "mcnemar_p", "mcnemar_method", "only_arm_correct",
              "only_reference_correct", "delong_p", "auc_arm", "auc_reference", "auc_difference"]
    rows = []
    for table in tables:
        for row in table.rows:
            for s in sorted(set(row.mcnemar) | set(row.delong), key=str):
                m, d = row.mcnemar.get(s), row.delong.get(s)
                rows.append([" / ".join(str(v) for _, v in table.group), table.role, row.arm, s,
                             *(["", "", "", ""] if m is None else [m.p_value, m.method, m.only_a_correct,
                                                                  m.only_b_correct]),
                             *(["", "", "", ""] if d is None else [d.p_value, d.auc_a, d.auc_b, d.difference])])
    return header, rows


def to_csv(header: Sequence[str], rows: Iterable[Sequence[Any]], comments: Sequence[str]) -> str:
    """CSV with '#' comment lines on top (pandas: read_csv(..., comment='#'))."""
    buffer = io.StringIO()
    for line in comments:
        buffer.write(f"# {line}\n")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
