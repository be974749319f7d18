"""The paper's two tables, remade from what a user has (scripts/paper_tables.py), beside the figures the abstract
publishes.

Table 1, the dataset distribution: per source, config (plane), split and class, the images and distinct patients
or cases of every build found under data_dir, counted from its records, with the skipped and ignored files and
the preprocessing settings its builder stored (data/distribution.py), and totals per source and plane. The
paper's three sources (elazig, asas, radiopaedia) are always listed, as "not built" when data_dir has no build of
them; the published totals (4,115 Elazig images; 213 ASAS images, external validation only; 102 Radiopaedia
normals) are reference rows, never inputs.

Table 2, ASembleNet against Xception, ResNet50 and InceptionV3: from the finished cells of baseline grid workdirs
(ablations/baselines.py run by scripts/run_ablations.py), per training set (plane) and test set (the internal test
split, the external set), accuracy, precision, recall, specificity, F1 and AUC as mean +- sample SD over seeds
with the 95% interval of the seed-averaged metric from the patient bootstrap (grids.tables: the same predictions,
means and resamples as the grid's own tables), in the paper's row order, with the abstract's accuracy (99%
coronal, 98.13% axial) as a reference row and a sentence on how the runs' conditions differ from the paper's.

Markdown (tables.md), CSV (table1.csv, table2.csv: long form, unrounded) and LaTeX (tables.tex), each headed by
the provenance lines of the grid tables (grids/publish.py).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Sequence

from asemble_jax import atomic_io
from asemble_jax.data.builders import get_builder
from asemble_jax.data.distribution import UNLABELED, Counts, Distribution, read_distribution
from asemble_jax.data.examples import PLANES
from asemble_jax.grids import tables
from asemble_jax.grids.cell import DONE
from asemble_jax.grids.publish import made_with, provenance_lines
from asemble_jax.grids.runner import read_grid_record

# ---- what the paper publishes (ACR Convergence 2025, abstract 2638) -------------------------------------------

PAPER_SOURCES = ("elazig", "asas", "radiopaedia")
PAPER_TOTALS = (
    ("elazig", "Elazig Fethi Sekin City Hospital", 4115, "axial and coronal, AS patients and healthy controls"),
    ("asas", "ASAS Online Case Library", 213, "expert-annotated; external validation only"),
    ("radiopaedia", "Radiopaedia.org", 102, "normal MRIs, added to the healthy class"),
)
PAPER_ACCURACY = {"coronal": 0.99, "axial": 0.9813}
PAPER_MODELS = (("asemblenet", "ASembleNet"), ("xception", "Xception"), ("resnet50", "ResNet50"),
                ("inception_v3", "InceptionV3"))
PAPER_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "auc")
METRIC_LABELS = {**tables.METRIC_LABELS, "recall": "recall"}
PAPER_INPUT_SIZE = 256
# Datasets whose config name does not say their plane.
PLANE_OF = {"bone_mri/stir": "coronal"}  # semi-coronal STIR
DATA_DESCRIPTIONS = {"synthetic_sij": "the project's procedural SIJ phantom",
                     "bone_mri": "bone_mri (public semi-coronal STIR MRI of axSpA patients, Hepburn et al.)"}
CLASS_ORDER = ("AS", "healthy", UNLABELED)
NOT_BUILT, NOT_PUBLISHED = "not built", "not published"


def plane_of(dataset: str) -> str | None:
    config = dataset.split("/")[-1]
    return PLANE_OF.get(dataset) or next((plane for plane in PLANES if plane in config), None)


def _count(images: int, patients: int) -> str:
    return f"{images:,} ({patients:,})"


# ---- Table 1 --------------------------------------------------------------------------------------------------

def table1_datasets(requested: Sequence[str], data_dir: str) -> list[str]:
    """The requested NAME/CONFIGs, then every config of the paper's sources not already named."""
    names = list(dict.fromkeys(requested))
    for source in PAPER_SOURCES:
        for config in get_builder(source, data_dir=data_dir).BUILDER_CONFIGS:
            if f"{source}/{config.name}" not in names:
                names.append(f"{source}/{config.name}")
    return names


def _classes(counts: Counts) -> list[str]:
    return [c for c in CLASS_ORDER if c in counts.images] + sorted(set(counts.images) - set(CLASS_ORDER))


def _used_as(d: Distribution) -> str:
    if not d.built:
        return NOT_BUILT
    if d.external_only():
        return "test only (external)"
    return "/".join(d.main_splits) or "no train/val/test split"


def _config(d: Distribution) -> str:
    return d.dataset.partition("/")[2] or "(default)"


def split_rows(distributions: Sequence[Distribution]) -> list[list[str]]:
    rows = []
    for d in distributions:
        if not d.built:
            rows.append([d.source, _config(d), "–", NOT_BUILT, "–", "–", "–"])
            continue
        for split in d.main_splits:
            counts = d.splits[split]
            for label in _classes(counts):
                rows.append([d.source, _config(d), "/".join(d.planes), split, label, f"{counts.images[label]:,}",
                             f"{counts.patients_of(label):,}"])
    return rows


def dataset_rows(distributions: Sequence[Distribution]) -> list[list[str]]:
    rows = []
    for d in distributions:
        if not d.built:
            rows.append([d.source, _config(d), "–", NOT_BUILT, *["–"] * 5])
            continue
        total = d.total()
        per_class = "; ".join(f"{label} {_count(total.images[label], total.patients_of(label))}"
                              for label in _classes(total))
        rows.append([d.source, _config(d), "/".join(d.planes), _used_as(d), per_class or "–",
                     f"{total.total_images:,}", f"{total.total_patients:,}", f"{d.skipped_files:,}",
                     f"{d.ignored_files:,}"])
    return rows


def plane_rows(distributions: Sequence[Distribution]) -> list[list[str]]:
    """Per source: images (patients) per plane and over both, every config of that plane merged (a patient with
    images in two configs or planes counts once), then the paper's published totals as reference rows."""
    sources = list(dict.fromkeys(d.source for d in distributions))
    rows = []
    for source in sources:
        built = [d for d in distributions if d.source == source and d.built]
        if not built:
            rows.append([source, NOT_BUILT, NOT_BUILT, NOT_BUILT])
            continue
        cells = []
        for plane in (*PLANES, None):
            parts = [d.total() for d in built if plane is None or plane in d.planes]
            merged = Counts.merge(parts)
            cells.append(_count(merged.total_images, merged.total_patients) if parts else "–")
        rows.append([source, *cells])
    for _, name, images, what in PAPER_TOTALS:
        rows.append([f"paper (published): {name}", NOT_PUBLISHED, NOT_PUBLISHED, f"{images:,} images; {what}"])
    return rows


SPLIT_COLUMNS = ("source", "config", "plane", "split", "class", "images", "patients or cases")
DATASET_COLUMNS = ("source", "config", "plane", "used as", "images (patients) per class", "images",
                   "patients or cases", "skipped files", "ignored files")
PLANE_COLUMNS = ("source", "axial images (patients)", "coronal images (patients)", "both planes")


def _settings(d: Distribution) -> str:
    if d.preprocess is not None:
        return ", ".join(f"{key}={value}" for key, value in d.preprocess.items())
    stored = ", ".join(f"{key}={value}" for key, value in d.other_settings.items())
    return "not stored with the build" + (f"; the build stored {stored}" if stored else "")


def table1_notes(distributions: Sequence[Distribution]) -> list[str]:
    """Per built dataset: the splits outside train/val/test, the splits too small to write, where patient ids came
    from, unlisted images; then the preprocessing settings, datasets with the same ones together."""
    notes = []
    for d in (d for d in distributions if d.built):
        parts = []
        if d.other_splits:
            parts.append("other splits, not in the totals: " + ", ".join(
                f"{split} {d.splits[split].total_images:,}" for split in d.other_splits))
        if d.empty_splits:
            parts.append(f"too few images to write split(s) {', '.join(d.empty_splits)}")
        if d.patient_ids_from:
            parts.append("patient ids from: " + ", ".join(f"{k} {v:,}" for k, v in d.patient_ids_from.items()))
        if d.unlisted_images:
            parts.append(f"{d.unlisted_images:,} image(s) in the folder that its table does not list")
        if parts:
            notes.append(f"- {d.dataset}: " + "; ".join(parts) + ".")
    by_settings: dict[str, list[str]] = {}
    for d in (d for d in distributions if d.built):
        by_settings.setdefault(_settings(d), []).append(d.dataset)
    notes += [f"- Preprocessing of {', '.join(names)}: {settings}." for settings, names in by_settings.items()]
    return notes


TABLE1_CAPTION = (
    "Images (and distinct patients or cases) per source and plane, counted from the records of each build; "
    "a patient with slices of both classes counts under both, and once in a total. Totals are over the train, val "
    "and test splits, so that each labelled image counts once. Where a source gives no patient, each near-duplicate "
    "group of images stands for one. Skipped files: unreadable files and unusable table rows the build left out; "
    "ignored: files outside the source's layout. The paper publishes totals only.")


def table1_csv(distributions: Sequence[Distribution]) -> tuple[list[str], list[list[Any]]]:
    header = ["source", "config", "status", "plane", "split", "class", "images", "patients", "skipped_files",
              "ignored_files"]
    rows: list[list[Any]] = []
    for d in distributions:
        if not d.built:
            rows.append([d.source, _config(d), NOT_BUILT, "", "", "", "", "", "", ""])
            continue
        plane = "/".join(d.planes)
        for split, counts in [*((s, d.splits[s]) for s in d.main_splits), ("total", d.total())]:
            for label in _classes(counts):
                rows.append([d.source, _config(d), "built", plane, split, label, counts.images[label],
                             counts.patients_of(label), "", ""])
            files = (d.skipped_files, d.ignored_files) if split == "total" else ("", "")
            rows.append([d.source, _config(d), "built", plane, split, "all", counts.total_images,
                         counts.total_patients, *files])
        for split in d.other_splits:
            counts = d.splits[split]
            rows.append([d.source, _config(d), "built", plane, split, "all", counts.total_images,
                         counts.total_patients, "", ""])
    for source, _, images, _ in PAPER_TOTALS:
        rows.append([source, "", "paper (published)", "axial+coronal" if source != "radiopaedia" else "", "total",
                     "healthy" if source == "radiopaedia" else "all", images, "", "", ""])
    return header, rows


def table1_provenance(distributions: Sequence[Distribution], data_dir: str, command: str) -> list[str]:
    built = [f"{d.dataset} {d.version}" for d in distributions if d.built]
    missing = [d.dataset for d in distributions if not d.built]
    return [f"Datasets read from `{data_dir}`: {', '.join(built) or 'none built'}; not built there: "
            f"{', '.join(missing) or 'none'}.", made_with(command)]


# ---- Table 2 --------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class PaperTable:
    """One training set and test-set role of a baseline grid, with each model's seed-averaged intervals."""
    grid: tables.Collected
    table: tables.Table
    intervals: dict[str, dict[str, Any]]  # model -> metric -> bootstrap.Interval
    dataset: str  # the training set (the grid's group)
    models_in_grid: tuple[str, ...]

    @property
    def plane(self) -> str | None:
        return plane_of(self.dataset)

    @property
    def title(self) -> str:
        return ", ".join([*(str(v) for _, v in self.table.group), self.table.role])


def collect_table2(workdir: str, *, threshold: str = "0.5", n_resamples: int = 2000,
                   seed: int = 0) -> tuple[tables.Collected, str, list[PaperTable]]:
    """(the grid's collected results, the command that ran it, one PaperTable per group and role)."""
    grid, grid_command = read_grid_record(workdir)
    if grid.table.arm != "model":
        raise tables.TableError(f"{workdir}: grid {grid.name!r} compares {grid.table.arm}s; Table 2 needs a baseline "
                                "grid, whose rows are models (ablations/baselines.py)")
    # The grid's own tables with the paper's metrics and without its paired tests: the same runs and means.
    paper_grid = dataclasses.replace(grid, table=dataclasses.replace(grid.table, metrics=PAPER_METRICS, tests=()))
    collected = tables.collect(workdir, paper_grid, threshold=threshold, n_resamples=n_resamples, seed=seed)
    models = tuple(dict.fromkeys(cell.factors["model"] for cell in grid.cells))
    results = []
    for table in collected.tables:
        where = f"{workdir}: {table.role}"
        intervals = {model: tables.seed_averaged_intervals(runs, PAPER_METRICS, n_resamples=n_resamples, seed=seed,
                                                           where=where)
                     for model, runs in table.runs.items()}
        dataset = dict(table.group).get("dataset", "")
        results.append(PaperTable(collected, table, intervals, str(dataset), models))
    return collected, grid_command, results


def _model_order(models: Sequence[str]) -> list[str]:
    known = [name for name, _ in PAPER_MODELS]
    return known + [m for m in models if m not in known]


def _label(model: str) -> str:
    return dict(PAPER_MODELS).get(model, model)


def _interval_cell(mean: float, sd: float, interval) -> str:
    def number(value: float) -> str:
        return "–" if not math.isfinite(value) else f"{value:.3f}"

    if not math.isfinite(mean):
        return "–"  # undefined on every seed (precision of a run that calls nothing positive)
    return f"{number(mean)} ± {number(sd)} [{number(interval.low)}, {number(interval.high)}]"


TABLE2_COLUMNS = ("model", "seeds", *(METRIC_LABELS[m] for m in PAPER_METRICS), "params")


def _reference(paper: PaperTable) -> str:
    accuracy = PAPER_ACCURACY.get(paper.plane or "") if paper.table.role == "test" else None
    return NOT_PUBLISHED if accuracy is None else f"{accuracy:g} ({100 * accuracy:g}%)"


def table2_rows(paper: PaperTable) -> list[list[str]]:
    rows = []
    by_model = {row.arm: row for row in paper.table.rows}
    for model in _model_order(paper.models_in_grid):
        row = by_model.get(model)
        if row is None:
            status = "no finished seed" if model in paper.models_in_grid else "not in this grid"
            rows.append([_label(model), status, *["–"] * len(PAPER_METRICS), "–"])
            continue
        params = row.costs.get("params")
        rows.append([_label(model), str(len(row.seeds)),
                     *(_interval_cell(row.mean[m], row.sd[m], paper.intervals[model][m]) for m in PAPER_METRICS),
                     "–" if params is None else f"{int(params):,}"])
    metrics = [_reference(paper) if m == "accuracy" else NOT_PUBLISHED for m in PAPER_METRICS]
    rows.append(["ASembleNet, paper (abstract)", "–", *metrics, NOT_PUBLISHED])
    return rows


def _distinct(values: Sequence[Any]) -> str:
    shown = sorted({v for v in values if v is not None}, key=str)
    return "/".join(f"{v:,}" if isinstance(v, int) else str(v) for v in shown) or "unknown"


def conditions(paper: PaperTable) -> str:
    """How the runs of this table differ from the paper's: data, budget, input size (from the cells' records)."""
    records = [r for r in paper.grid.records
               if r["status"] == DONE and all(r["factors"].get(k) == v for k, v in paper.table.group)]
    steps = [r.get("total_steps") for r in records]
    batch = [r.get("global_batch_size") for r in records]
    size = [r.get("image_size") for r in records]
    presets = [dict(item.partition("=")[::2] for item in r["config"].partition(":")[2].split(",")).get("preset")
               for r in records if r["factors"].get("model") == "asemblenet"]
    baseline_params = [r.get("params") for r in records if r["factors"].get("model") != "asemblenet"]
    source = paper.dataset.split("/")[0]
    described = DATA_DESCRIPTIONS.get(source, paper.dataset)
    data = (f"Data: trained on {paper.dataset} ({described}) and tested on {paper.table.evaluated_on}; the paper "
            "trained on 4,115 Elazig images with 102 Radiopaedia normals and validated externally on 213 ASAS images.")
    seen = [s * b for s, b in zip(steps, batch) if s is not None and b is not None]
    budget = (f" Budget: {_distinct(steps)} training steps of {_distinct(batch)} images per run "
              f"({_distinct(seen)} images seen), from scratch; the paper publishes no training budget.")
    sizes = (f" Input size: {_distinct(size)} pixels a side; the paper's {PAPER_INPUT_SIZE}x{PAPER_INPUT_SIZE}.")
    models = f" ASembleNet is its `{_distinct(presets)}` preset." if presets else ""
    if baseline_params:
        models += f" The baselines have {_distinct(baseline_params)} parameters."
    return "How our conditions differ from the paper's. " + data + budget + sizes + models


def table2_caption(paper: PaperTable, *, threshold: str, n_resamples: int) -> str:
    decision = ("threshold 0.5" if threshold == "0.5" else
                "each run's Youden threshold, chosen on its own validation split")
    return (f"Test set: {paper.table.evaluated_on} ({paper.table.n_examples} slices, {paper.table.n_patients} "
            f"patients). Each cell: mean ± sample SD over seeds [95% interval of the seed-averaged metric from a "
            f"bootstrap over test patients, {n_resamples} resamples: each resample draws patients with replacement "
            f"and scores every seed's run on them]; slice-level decisions at {decision}. The reference row holds the "
            "abstract's accuracy (99% coronal, 98.13% axial; it does not say on which split), given in the internal "
            "test tables only: the abstract publishes no other figure. " + conditions(paper))


def table2_csv(papers: Sequence[PaperTable]) -> tuple[list[str], list[list[Any]]]:
    header = ["group", "role", "plane", "model", "n_seeds", "seeds"]
    for m in PAPER_METRICS:
        header += [f"{m}_mean", f"{m}_sd", f"{m}_ci_low", f"{m}_ci_high"]
    header.append("params")
    rows: list[list[Any]] = []
    for paper in papers:
        group = " / ".join(str(v) for _, v in paper.table.group)
        for row in paper.table.rows:
            values: list[Any] = [group, paper.table.role, paper.plane or "", row.arm, len(row.seeds),
                                 " ".join(str(s) for s in row.seeds)]
            for m in PAPER_METRICS:
                interval = paper.intervals[row.arm][m]
                values += [row.mean[m], row.sd[m], interval.low, interval.high]
            rows.append(values + ["" if row.costs.get("params") is None else row.costs["params"]])
        accuracy = PAPER_ACCURACY.get(paper.plane or "") if paper.table.role == "test" else None
        if accuracy is not None:
            reference = [group, paper.table.role, paper.plane, "asemblenet (paper, abstract)", "", ""]
            for m in PAPER_METRICS:
                reference += [accuracy if m == "accuracy" else "", "", "", ""]
            rows.append(reference + [""])
    return header, rows


# ---- the files ------------------------------------------------------------------------------------------------

def write_paper_tables(out: str, *, data_dir: str, datasets: Sequence[str], grid_workdirs: Sequence[str],
                       command: str, threshold: str = "0.5", n_resamples: int = 2000,
                       seed: int = 0) -> tuple[list[Distribution], list[PaperTable]]:
    """Writes OUT/tables.md, table1.csv, table2.csv and tables.tex; returns what they were made from."""
    distributions = [read_distribution(name, data_dir) for name in table1_datasets(datasets, data_dir)]
    header1 = table1_provenance(distributions, data_dir, command)
    grids = [collect_table2(workdir, threshold=threshold, n_resamples=n_resamples, seed=seed)
             for workdir in grid_workdirs]
    header2 = [line for collected, grid_command, _ in grids
               for line in provenance_lines(collected, grid_command, command)[:-1]] + [made_with(command)]
    papers = [paper for _, _, found in grids for paper in found]

    md = ["# The paper's Table 1 and Table 2, from the data and grids at hand", "", *header1, "",
          "## Table 1: dataset distribution", "", TABLE1_CAPTION, "",
          "### Per source, plane, split and class", "", tables.markdown_table(SPLIT_COLUMNS, split_rows(distributions)),
          "### Per dataset", "", tables.markdown_table(DATASET_COLUMNS, dataset_rows(distributions)),
          "### Totals per source and plane, with the paper's", "", tables.markdown_table(PLANE_COLUMNS, plane_rows(distributions)),
          *table1_notes(distributions), "", "## Table 2: ASembleNet against Xception, ResNet50 and InceptionV3", ""]
    if not grid_workdirs:
        md += ["No baseline grid workdir given (--grid_workdir).", ""]
    md += [*header2, ""] if grid_workdirs else []
    for collected, _, found in grids:
        md += ["Seeds left out because some of their cells are not done:", *(f"- {i}" for i in collected.incomplete),
               ""] if collected.incomplete else []
        if not found:
            md += [f"Grid `{collected.grid.spec}`: no cell has finished yet.", ""]
    tex = ["% " + line for line in header1 + (header2 if grid_workdirs else [])] + [""]
    tex.append(tables.latex_table(DATASET_COLUMNS, dataset_rows(distributions), "Dataset distribution. " + TABLE1_CAPTION,
                      "paper_table1_datasets"))
    tex.append(tables.latex_table(PLANE_COLUMNS, plane_rows(distributions), "Totals per source and plane, with the paper's "
                      "published totals.", "paper_table1_planes"))
    for paper in papers:
        caption = table2_caption(paper, threshold=threshold, n_resamples=n_resamples)
        rows = table2_rows(paper)
        md += [f"### {paper.title}", "", caption, "", tables.markdown_table(TABLE2_COLUMNS, rows)]
        tex.append(tables.latex_table(TABLE2_COLUMNS, rows, f"ASembleNet against the paper's baselines, {paper.title}. {caption}",
                          "paper_table2_" + tables.slug(paper.table)))
    atomic_io.write_text(os.path.join(out, "tables.md"), "\n".join(md))
    atomic_io.write_text(os.path.join(out, "tables.tex"), "\n".join(tex))
    atomic_io.write_text(os.path.join(out, "table1.csv"), tables.to_csv(*table1_csv(distributions), header1))
    atomic_io.write_text(os.path.join(out, "table2.csv"),
                         tables.to_csv(*table2_csv(papers), header2 if grid_workdirs else ["no baseline grid given"]))
    return distributions, papers
