"""Writes a grid workdir's tables and figures to a folder: tables.md (every table with its caption and figures),
tables.csv (long form, unrounded), tables.tex (one LaTeX table per test set), paired_tests.csv (baseline grids:
per-seed McNemar and DeLong), <table>_differences.png and <table>_roc.png, and for grids whose cells ask for a
localisation evaluation a section of tables.md per arm and seed with its <name>_localization.json; factorial
grids (TableSpec.contributions) add a contributions section per table (grids/factorial.py), contributions.csv
and <table>_contributions.png. Every file says which grid, command, git commit, package versions and date it
comes from."""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
from typing import Any

from asemble_jax import atomic_io, storage
from asemble_jax.grids import cell as cell_lib, factorial, figures, tables
from asemble_jax.grids.cell import DONE, FAILED
from asemble_jax.grids.grid import LOCALIZATION, Grid, TableSpec, conflicting_cell, load_grid
from asemble_jax.grids.runner import read_grid_record
from asemble_jax.evaluation import localization_report
from asemble_jax.provenance import git_commit, now, package_versions
from asemble_jax.workdir import GridWorkdir

MAX_LISTED = 20  # failed or incomplete cells listed by name; the rest are counted


def _distinct(records: list[dict[str, Any]], key: str) -> str:
    values = sorted({str(r.get("provenance", {}).get(key)) for r in records if r.get("provenance")})
    return ", ".join(values) or "unknown"


def _cell_versions(records: list[dict[str, Any]]) -> str:
    versions: dict[str, set[str]] = {}
    for record in records:
        for name, version in record.get("provenance", {}).get("versions", {}).items():
            versions.setdefault(name, set()).add(version)
    return ", ".join(f"{name} {'/'.join(sorted(v))}" for name, v in versions.items()) or "unknown"


def _listed(items: list[str]) -> list[str]:
    shown = [f"- {item}" for item in items[:MAX_LISTED]]
    return shown + ([f"- ... and {len(items) - MAX_LISTED} more"] if len(items) > MAX_LISTED else [])


def provenance_lines(collected: tables.Collected, grid_command: str, table_command: str) -> list[str]:
    grid, records = collected.grid, collected.records
    done = [r for r in records if r["status"] == DONE]
    failed = [r for r in records if r["status"] == FAILED]
    lines = [f"Grid `{grid.spec}` ({grid.name}): {len(grid.cells)} cells, {len(done)} done, {len(failed)} failed, "
             f"{len(grid.cells) - len(records)} not finished. Run with `{grid_command}`."]
    if done:
        walls = [r["wall_time_s"] for r in done]
        lines.append(f"Cell wall time (done cells, as each cell recorded it): total {sum(walls) / 3600:.2f} h, "
                     f"median {statistics.median(walls) / 60:.1f} min per cell. Cells ran at git commit(s) "
                     f"{_distinct(done, 'git_commit')} on {_distinct(done, 'machine')}, with "
                     f"{_cell_versions(done)}.")
    lines.append(made_with(table_command))
    return lines


def made_with(table_command: str) -> str:
    """The provenance line every table file ends its header with: the command, date, commit and versions."""
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    return f"Tables made with `{table_command}` on {now()} at git commit {git_commit()} ({versions})."


def tabulated_grid(workdir: str, grid_spec: str | None) -> tuple[Grid, str]:
    """(grid, command that ran the workdir) of the workdir's own grid, or of `grid_spec` (grid file:ARG) when given:
    a grid whose every cell is a cell of the workdir's grid, the same run (the leave-one-out grid inside a
    factorial workdir). The cells come from the workdir's record, command-line overrides included."""
    stored, grid_command = read_grid_record(workdir)
    if not grid_spec:
        return stored, grid_command
    asked = load_grid(grid_spec)
    stored_cells = {cell.name: cell for cell in stored.cells}
    absent = [cell.name for cell in asked.cells if cell.name not in stored_cells]
    conflict = f"no cell {absent[0]}" if absent else conflicting_cell(asked, stored)
    if conflict:
        raise tables.TableError(f"{workdir}: its grid ({stored.spec!r}) does not hold the grid {grid_spec!r}: "
                                f"{conflict}")
    return dataclasses.replace(asked, cells=tuple(stored_cells[c.name] for c in asked.cells)), grid_command


def write_tables(workdir: str, out: str, *, command: str, threshold: str = "0.5", n_resamples: int = 2000,
                 seed: int = 0, grid_spec: str | None = None) -> tables.Collected:
    grid, grid_command = tabulated_grid(workdir, grid_spec)
    collected = tables.collect(workdir, grid, threshold=threshold, n_resamples=n_resamples, seed=seed)
    spec = grid.table
    header = provenance_lines(collected, grid_command, command)
    if grid_spec:
        header.insert(1, f"Tabulated as the grid `{grid_spec}`, whose cells are a part of the grid that the command "
                         "above ran in this workdir (the same runs).")
    failed = [f"{r['name']}: {r.get('error')}" for r in collected.records if r["status"] == FAILED]

    md = [f"# {grid.name}: {spec.arm} vs {spec.reference}", "", *header, ""]
    if grid.notes:
        md += [grid.notes, ""]
    if failed:
        md += ["Failed cells (left out):", *_listed(failed), ""]
    if collected.incomplete:
        md += ["Seeds left out because some of their cells are not done:", *_listed(collected.incomplete), ""]
    if not collected.tables:
        md += ["No cell has finished yet.", ""]
    tex = ["% " + line for line in header] + [""]
    sections: list[tuple[tables.Table, factorial.ContributionTable]] = []
    for table in collected.tables:
        name = tables.slug(table)
        title = ", ".join([*(str(v) for _, v in table.group), table.role])
        text = tables.caption(table, spec, threshold=threshold, n_resamples=n_resamples)
        differences_png, roc_png = f"{name}_differences.png", f"{name}_roc.png"
        if any(row.difference for row in table.rows):
            figures.plot_differences(table, spec, os.path.join(out, differences_png), title)
        figures.plot_roc(table, os.path.join(out, roc_png), title)
        md += [f"## {title}", "", text, "", tables.markdown(table, spec)]
        if any(row.difference for row in table.rows):
            md.append(f"![differences from {spec.reference}]({differences_png}) ")
        md += [f"![ROC curves]({roc_png})", ""]
        tex.append(tables.latex(table, spec, f"{grid.name}, {title}. {text}", f"{grid.name}_{name}"))
        if spec.contributions:
            md += contribution_section(table, spec, out, title, tex, sections, n_resamples=n_resamples, seed=seed)

    md += localization_sections(workdir, grid, out, n_resamples=n_resamples, seed=seed)
    atomic_io.write_text(os.path.join(out, "tables.md"), "\n".join(md))
    atomic_io.write_text(os.path.join(out, "tables.tex"), "\n".join(tex))
    atomic_io.write_text(os.path.join(out, "tables.csv"),
                         tables.to_csv(*tables.csv_rows(collected.tables, spec), header))
    if sections:
        atomic_io.write_text(os.path.join(out, "contributions.csv"),
                             tables.to_csv(factorial.CSV_HEADER, factorial.csv_rows(sections), header))
    if {"mcnemar", "delong"} & set(spec.tests):
        atomic_io.write_text(os.path.join(out, "paired_tests.csv"),
                             tables.to_csv(*tables.paired_test_rows(collected.tables), header))
    return collected


def contribution_section(table: tables.Table, spec: TableSpec, out: str, title: str, tex: list[str],
                         sections: list, *, n_resamples: int, seed: int) -> list[str]:
    """A factorial grid's contributions and interactions for one table (grids/factorial.py), as Markdown; its
    LaTeX goes to `tex`, its rows to `sections` (contributions.csv), its figure to <table>_contributions.png."""
    contributions = factorial.compute(table, spec, n_resamples=n_resamples, seed=seed)
    if isinstance(contributions, str):
        return [f"### {title}: contributions", "", f"Not computed: {contributions}.", ""]
    sections.append((table, contributions))
    name = tables.slug(table)
    text = factorial.caption(contributions, table, spec)
    figures.plot_contributions(contributions, os.path.join(out, f"{name}_contributions.png"), title)
    tex.append(factorial.latex(contributions, f"{title}. {text}", f"contributions_{name}"))
    return [f"### {title}: contributions and interactions", "", text, "", factorial.markdown(contributions),
            f"![contributions and interactions]({name}_contributions.png)", ""]


def localization_sections(workdir: str, grid: Grid, out: str, *, n_resamples: int, seed: int) -> list[str]:
    """Markdown sections, one per group, localisation role, arm and seed: the per-slice Grad-CAM scores of its
    cells pooled (the folds of a cross-validation, as the tables pool predictions), with patient-bootstrap CIs;
    each summary also goes to <name>_localization.json. A run some of whose cells are not done is named, not
    summarised."""
    spec, cells = grid.table, GridWorkdir(workdir)
    parts: dict[tuple, list[localization_report.ScoredSlices]] = {}
    expected: dict[tuple, int] = {}
    for cell in grid.cells:
        record = cell_lib.read_record(cells.cell(cell.name).root)
        for evaluation in cell.evaluations:
            if evaluation.kind != LOCALIZATION:
                continue
            key = (spec.group_of(cell.factors), evaluation.role, cell.factors[spec.arm], cell.factors[spec.replicate])
            expected[key] = expected.get(key, 0) + 1
            if record is None or record["status"] != DONE:
                continue
            entry = next(e for e in record["evaluations"] if e["role"] == evaluation.role)
            with storage.open(cells.cell(cell.name).path(entry["scores"])) as f:
                parts.setdefault(key, []).append(localization_report.ScoredSlices.from_json(json.load(f)))
    lines = []
    for key in expected:
        group, role, arm, replicate = key
        title = ", ".join([*(str(v) for _, v in group), role, f"{spec.arm} {arm}", f"{spec.replicate} {replicate}"])
        found = parts.get(key, [])
        if len(found) < expected[key]:
            lines += [f"## {title}", "", f"{len(found)} of {expected[key]} cells done: not summarised yet.", ""]
            continue
        summary = localization_report.summarise(localization_report.pool(found), n_resamples=n_resamples, seed=seed)
        name = "_".join([*(str(v) for _, v in group), role, str(arm), f"{spec.replicate}{replicate}"])
        atomic_io.write_json(os.path.join(out, name.replace("/", "_") + "_localization.json"), summary)
        pooled = f" ({len(found)} cells pooled over {'/'.join(spec.pooled)})" if spec.pooled else ""
        lines += [localization_report.markdown(summary, f"Grad-CAM localisation: {title}{pooled}", heading="##")]
    return lines
