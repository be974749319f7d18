"""A grid: named cells, each one training run (a config file plus overrides) and the test sets it is evaluated
on, and the table that the cells' results go into.

A grid file (ablations/components.py, ablations/baselines.py) defines `get_grid(arg) -> Grid`; load it with
`load_grid("ablations/components.py:preset=tiny,seeds=3")`; a grid file reads its ARG with
asemble_jax.config.parse_arg (typed, unknown keys refused), lists joined with '+'. Cell names are paths ("coronal/no_se/seed1") and
name the cell's sub-workdir, so `--only="coronal/*"` selects with a shell pattern.

Every cell carries `factors`, its coordinates in the grid (dataset, variant or model, seed, fold). The table spec
says which factor is the table's rows (`arm`), which row the others are compared with (`reference`), which factor
repeats a run (`replicate`, the seed) and which factors' test predictions are concatenated before scoring
(`pooled`, cross-validation folds); any other factor (the dataset) splits the results into separate tables.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
from typing import Any, Mapping, Sequence

import ml_collections

from asemble_jax.errors import UserError
from asemble_jax.evaluation.metrics import METRIC_NAMES
from asemble_jax.models.registry import presets
from asemble_jax.config import apply_overrides, load_config, load_module

_NAME = re.compile(r"[A-Za-z0-9_.+=-]+(/[A-Za-z0-9_.+=-]+)*")
TABLE_METRICS = ("auc", "accuracy", "f1", "recall", "specificity")
TESTS = ("paired_bootstrap", "mcnemar", "delong")
COSTS = ("params", "gflops", "train_images_per_second")
# The synthetic phantom's stand-in external test set of each plane.
SYNTHETIC_EXTERNAL = {"coronal": "synthetic_sij/shifted", "axial": "synthetic_sij/shifted_axial"}
PLANES = ("axial", "coronal")
CLASSIFICATION, LOCALIZATION = "classification", "localization"
EVALUATION_KINDS = (CLASSIFICATION, LOCALIZATION)


class GridError(UserError, ValueError):
    """A grid that cannot be expanded or run as asked; the message is the one line a user needs."""


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A test set a cell is scored on. `role` is what the tables call it ("test", "external") and is the same for
    the folds of a cross-validation, whose held-out splits differ. `kind`: "classification" (metrics, tables of
    differences) or "localization" (Grad-CAM against the split's lesion masks, a section of the report)."""
    role: str
    dataset: str
    split: str
    kind: str = CLASSIFICATION

    def to_json(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)
        if self.kind == CLASSIFICATION:
            del payload["kind"]  # records of grids from before kinds existed stay identical
        return payload


@dataclasses.dataclass(frozen=True)
class Cell:
    name: str
    factors: Mapping[str, Any]
    config: str  # "path/to/config.py:ARG", as scripts/train.py's --config takes it
    overrides: Mapping[str, Any]  # dotted config fields, e.g. {"total_steps": 300, "data.train_split": "fold0_train"}
    evaluations: tuple[Evaluation, ...]
    # What one run of the cell takes of a cluster, as Ray counts it ({"GPU": 1}, {"TPU": 4}, {"CPU": 2}); where
    # it runs, not what it computes, so not part of its identity. The local runner runs one cell at a time.
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def build_config(self) -> ml_collections.ConfigDict:
        return apply_overrides(load_config(self.config), self.overrides)

    def to_json(self) -> dict[str, Any]:
        payload = {"name": self.name, "factors": dict(self.factors), "config": self.config,
                   "overrides": dict(self.overrides), "evaluations": [e.to_json() for e in self.evaluations]}
        if self.resources:  # records of grids without resources stay identical
            payload["resources"] = dict(self.resources)
        return _jsonable(payload)

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Cell:
        return cls(name=payload["name"], factors=dict(payload["factors"]), config=payload["config"],
                   overrides=dict(payload["overrides"]),
                   evaluations=tuple(Evaluation(**e) for e in payload["evaluations"]),
                   resources=dict(payload.get("resources", {})))

    def identity(self) -> dict[str, Any]:
        """What makes two cells the same run, wherever the repository is checked out: the config file's folder
        and the resources it ran on are left out."""
        payload = self.to_json()
        payload.pop("resources", None)
        path, sep, arg = self.config.partition(":")
        payload["config"] = os.path.basename(path) + sep + arg
        return payload


@dataclasses.dataclass(frozen=True)
class TableSpec:
    arm: str  # the factor whose values are the table's rows
    reference: str  # the row every other row is compared with
    replicate: str = "seed"
    pooled: tuple[str, ...] = ()
    metrics: tuple[str, ...] = TABLE_METRICS
    tests: tuple[str, ...] = ("paired_bootstrap",)
    costs: tuple[str, ...] = COSTS
    budget: str = ""  # how the training budget was set, stated in the captions ("Equal steps: ...")
    # Factorial grids: the model switches (registry.COMPONENTS) whose Shapley contributions the tables compute;
    # the arms are then ASembleNet variant names.
    contributions: tuple[str, ...] = ()

    def __post_init__(self):
        for field, values, valid in (("metrics", self.metrics, METRIC_NAMES), ("tests", self.tests, TESTS),
                                     ("costs", self.costs, COSTS)):
            unknown = sorted(set(values) - set(valid))
            if unknown:
                raise GridError(f"table {field} {', '.join(unknown)} unknown; valid: {', '.join(valid)}")

    def group_of(self, factors: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        """The factors that split results into separate tables (all but arm, replicate and pooled ones)."""
        kept = set(factors) - {self.arm, self.replicate, *self.pooled}
        return tuple((key, factors[key]) for key in sorted(kept))

    def to_json(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> TableSpec:
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in payload.items()})


@dataclasses.dataclass(frozen=True)
class Grid:
    name: str
    cells: tuple[Cell, ...]
    table: TableSpec
    notes: str = ""  # what a reader of the tables must know about how the cells were run
    spec: str = ""  # "file.py:ARG" it was loaded from (load_grid fills it in)

    def __post_init__(self):
        names = [cell.name for cell in self.cells]
        if not names:
            raise GridError(f"grid {self.name!r} has no cells")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise GridError(f"grid {self.name!r} names several cells {', '.join(duplicates)}")
        for cell in self.cells:
            if not _NAME.fullmatch(cell.name) or ".." in cell.name.split("/"):
                raise GridError(f"cell name {cell.name!r} must be a relative path of letters, digits and _.+=-")
            missing = {self.table.arm, self.table.replicate} - set(cell.factors)
            if missing:
                raise GridError(f"cell {cell.name} lacks the factor(s) {', '.join(sorted(missing))} its table needs")
            roles = [evaluation.role for evaluation in cell.evaluations]
            if not roles or len(set(roles)) != len(roles):
                raise GridError(f"cell {cell.name} needs at least one evaluation, each with its own role")
            kinds = [evaluation.kind for evaluation in cell.evaluations]
            if CLASSIFICATION not in kinds or set(kinds) - set(EVALUATION_KINDS):
                raise GridError(f"cell {cell.name}: evaluation kinds must come from {', '.join(EVALUATION_KINDS)}, "
                                "with at least one classification")
        if self.table.reference not in {cell.factors[self.table.arm] for cell in self.cells}:
            raise GridError(f"the table's reference {self.table.arm}={self.table.reference} is not in the grid")

    def select(self, pattern: str | None) -> tuple[Cell, ...]:
        """Cells whose name matches the shell pattern (all when pattern is None); GridError when none does."""
        if not pattern:
            return self.cells
        chosen = tuple(cell for cell in self.cells if fnmatch.fnmatchcase(cell.name, pattern))
        if not chosen:
            raise GridError(f"no cell of grid {self.name!r} matches {pattern!r}; names look like {self.cells[0].name}")
        return chosen

    def with_overrides(self, overrides: Mapping[str, Any]) -> Grid:
        """The same grid with extra config overrides (e.g. from the command line) on every cell."""
        cells = tuple(dataclasses.replace(cell, overrides={**cell.overrides, **overrides}) for cell in self.cells)
        return dataclasses.replace(self, cells=cells)

    def with_resources(self, resources: Mapping[str, float]) -> Grid:
        """The same grid with every cell taking `resources` (e.g. from the command line) instead of its own."""
        return dataclasses.replace(self, cells=tuple(dataclasses.replace(cell, resources=dict(resources))
                                                     for cell in self.cells))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "spec": self.spec, "notes": self.notes, "table": self.table.to_json(),
                "cells": [cell.to_json() for cell in self.cells]}

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> Grid:
        return cls(name=payload["name"], spec=payload["spec"], notes=payload["notes"],
                   table=TableSpec.from_json(payload["table"]),
                   cells=tuple(Cell.from_json(cell) for cell in payload["cells"]))


def conflicting_cell(first: Grid, second: Grid) -> str | None:
    """The first cell name the two grids both have but as different runs (Cell.identity), said in words; None when
    every shared name is the same run. Grids whose shared cells agree may use one workdir: a cell is trained once,
    whichever grid asks for it (the factorial and the leave-one-out component grids)."""
    theirs = {cell.name: cell.identity() for cell in second.cells}
    for cell in first.cells:
        other = theirs.get(cell.name)
        if other is None:
            continue
        mine = cell.identity()
        for field in sorted(set(mine) | set(other)):
            if mine.get(field) != other.get(field):
                return f"cell {cell.name}: {field} was {mine.get(field)}, now {other.get(field)}"
    return None


def load_grid(spec: str) -> Grid:
    """The grid of "path/to/grid.py[:ARG]": the file's get_grid(ARG)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise GridError(f"{path}: no such grid file")
    module = load_module(path)
    if not hasattr(module, "get_grid"):
        raise GridError(f"{path}: a grid file defines get_grid(arg) -> Grid")
    return dataclasses.replace(module.get_grid(arg or None), spec=spec)


_RESOURCE = re.compile(r"[A-Za-z_][A-Za-z0-9_:.-]*")


def parse_resources(text: str) -> dict[str, float]:
    """A cell's resources from "GPU=1", "CPU=4,TPU=4" or "CPU=1,my_label=1" (Ray's names: CPU, GPU, TPU, any
    custom resource of the cluster's nodes); GridError for anything else."""
    resources = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        try:
            amount = float(value)
        except ValueError:
            amount = -1.0
        if not sep or not _RESOURCE.fullmatch(key) or not 0 <= amount < float("inf") or key in resources:
            raise GridError(f"resources {text!r}: each item is NAME=AMOUNT (a number >= 0, each name once), "
                            "e.g. GPU=1 or CPU=4,TPU=4")
        resources[key] = amount
    return resources


def parse_list(value: str) -> list[str]:
    """A list grid argument: items joined with '+' (planes=axial+coronal)."""
    return [item for item in value.split("+") if item]


def parse_subset(options: Mapping[str, str], key: str, valid: Sequence[str], reference: str | None = None
                 ) -> list[str]:
    """The '+'-joined list options[key], each item from `valid`, non-empty and holding `reference` if given."""
    chosen = parse_list(options[key])
    unknown = sorted(set(chosen) - set(valid))
    if unknown or not chosen or (reference is not None and reference not in chosen):
        must = f"include {reference} (the reference) and " if reference is not None else ""
        raise GridError(f"{key} must {must}come from {', '.join(valid)}"
                        + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    return chosen


def parse_preset(options: Mapping[str, str]) -> str:
    """options["preset"], an ASembleNet preset."""
    if options["preset"] not in presets("asemblenet"):
        raise GridError(f"preset {options['preset']!r} unknown; valid: {', '.join(presets('asemblenet'))}")
    return options["preset"]


def at_least(options: Mapping[str, Any], key: str, minimum: int = 1) -> int:
    """options[key] (a whole number, as parse_arg typed it), refused below `minimum`."""
    if options[key] < minimum:
        raise GridError(f"grid argument {key}={options[key]} must be at least {minimum}")
    return options[key]


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """Where a cell trains and what it is tested on, with the parts of the cell name that say so."""
    factors: Mapping[str, Any]
    name_prefix: str  # leading part of cell names ("coronal"), or ""
    name_suffix: str  # trailing part ("fold3"), or ""
    overrides: Mapping[str, Any]
    evaluations: tuple[Evaluation, ...]

    def cell_name(self, arm: str, seed: int) -> str:
        return "/".join(part for part in (self.name_prefix, arm, f"seed{seed}", self.name_suffix) if part)


BONE_MRI_NOTES = (
    "bone_mri: leave-one-patient-out folds; each fold trains on the other labelled patients and is tested on the "
    "held-out one, and the held-out predictions of all folds are pooled before scoring. With so few patients no "
    "validation patients can be spared, so the training split also plays the validation split: the 'best' "
    "checkpoint and the Youden threshold are chosen on training patients (never on the held-out one).")


def training_sets(dataset: str, planes: Sequence[str], folds: int) -> list[TrainingSet]:
    """The training sets of `dataset` ("synthetic_sij" or "bone_mri"): one per plane for the phantom, with the
    shifted phantom of the plane as external test set; one per leave-one-patient-out fold for bone_mri."""
    unknown = sorted(set(planes) - set(PLANES))
    if unknown:
        raise GridError(f"planes {', '.join(unknown)} unknown; valid: {', '.join(PLANES)}")
    if dataset == "synthetic_sij":
        return [TrainingSet(
            factors={"dataset": f"synthetic_sij/{plane}"}, name_prefix=plane, name_suffix="", overrides={},
            evaluations=(Evaluation("test", f"synthetic_sij/{plane}", "test"),
                         Evaluation("external", SYNTHETIC_EXTERNAL[plane], "test")))
            for plane in planes or PLANES]
    if dataset == "bone_mri":
        if set(planes) - {"coronal"}:
            raise GridError("bone_mri holds semi-coronal scans only: use planes=coronal")
        return [TrainingSet(
            factors={"dataset": "bone_mri/stir", "fold": k}, name_prefix="", name_suffix=f"fold{k}",
            overrides={"data.train_split": f"fold{k}_train", "data.val_split": f"fold{k}_train"},
            evaluations=(Evaluation("test", "bone_mri/stir", f"fold{k}_test"),))
            for k in range(folds)]
    raise GridError(f"grid dataset {dataset!r} unknown; valid: synthetic_sij, bone_mri")


def dataset_notes(dataset: str) -> str:
    return BONE_MRI_NOTES if dataset == "bone_mri" else ""
