"""The paper's tables (scripts/paper_tables.py). Table 1: the counts of every builder's dummy data built into a
temporary folder, and of a tiny phantom, equal a count made apart from the records (the source folders and tables,
the builds' own reports and shard lengths); a paper source that is not built is listed as such; ASAS has test rows
only. Table 2: on a grid workdir of fabricated baseline cells, the means and SDs equal those of the grid's own
tables (grids/publish.py) for the same cells, models come in the paper's order beside the abstract's accuracy,
and each interval is the patient bootstrap's."""
import collections
import csv
import importlib.util
import os
import pathlib

import numpy as np
import pytest

from asemble_datasets.elazig import make_dummy_data as elazig_dummy
from asemble_datasets.synthetic_sij.synthetic_sij_dataset_builder import SyntheticSij, SyntheticSijConfig
from asemble_jax import atomic_io
from asemble_jax.data import phantom
from asemble_jax.data.builders import build, get_builder
from asemble_jax.data.distribution import distribution_of, read_distribution
from asemble_jax.errors import run_main
from asemble_jax.evaluation.bootstrap import bootstrap_metrics
from asemble_jax.grids import paper_tables, runner, tables
from asemble_jax.grids.grid import Cell, Evaluation, Grid, TableSpec
from asemble_jax.grids.publish import write_tables
from asemble_jax.workdir import Workdir

REPO = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("paper_tables_script", REPO / "scripts" / "paper_tables.py")
_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_script)
main = _script.main
DUMMY = {name: REPO / "datasets" / name / "dummy_data" for name in ("elazig", "asas", "radiopaedia", "bone_mri")}
MANUAL = [f"{source}/{plane}" for source in ("elazig", "asas", "radiopaedia") for plane in ("axial", "coronal")]
RESAMPLES = 200


def _csv_rows(path):
    with open(path) as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


# ---- independent counts of the dummy data ---------------------------------------------------------------------

def elazig_class_counts(plane: str) -> collections.Counter:
    """Images per class of one plane, from the dummy folder itself: the first folder under the plane folder names
    the class; the damaged file is not an image."""
    folder = {"axial": "Axial", "coronal": "Coronal"}[plane]
    classes = {"AS diagnosis": "AS", "Normal": "healthy", "AS": "AS", "healthy_controls": "healthy"}
    damaged = {pathlib.Path(d).name for d in elazig_dummy.DAMAGED}
    return collections.Counter(classes[p.relative_to(DUMMY["elazig"] / folder).parts[0]]
                               for p in (DUMMY["elazig"] / folder).rglob("*")
                               if p.suffix in {".png", ".jpg", ".tif"} and p.name not in damaged)


def table_rows(path: pathlib.Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def asas_cases(plane: str) -> dict[str, str]:
    """case id -> class of the usable labels.csv rows of one plane (a file that exists, a known label)."""
    written = {"AS": "AS", "ankylosing spondylitis": "AS", "Normal": "healthy", "healthy": "healthy"}
    return {row["Case ID"]: written[row["Diagnosis"]] for row in table_rows(DUMMY["asas"] / "labels.csv")
            if row["Plane"].lower().replace("semi-", "") in (plane, plane[:2])
            and (DUMMY["asas"] / row["File"]).exists() and row["Diagnosis"] in written}


def radiopaedia_rows(plane: str) -> list[dict[str, str]]:
    return [r for r in table_rows(DUMMY["radiopaedia"] / "cases.csv") if r["plane"] == plane and r["author"]]


def report_counts(metadata) -> dict[tuple[str, str], tuple[int, int]]:
    """(split, class) -> (images, patients) from the file list a split source's build report stores; an image of
    unknown patient counts as its near-duplicate group."""
    images, patients = collections.Counter(), collections.defaultdict(set)
    for entry in metadata["files"]:
        key = (entry["split"], entry["label"])
        images[key] += 1
        patients[key].add(entry["patient_id"] or f"group {entry['group']}")
    return {key: (images[key], len(patients[key])) for key in images}


def read_metadata(data_dir, name):
    return get_builder(name, data_dir=data_dir).info.metadata


TINY_SLICES, TINY_PATIENTS = 3, {"train": 4, "val": 2, "test": 2}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    for name in MANUAL:
        build(name, data_dir=directory, manual_dir=DUMMY[name.split("/")[0]])
    build("bone_mri", data_dir=directory, manual_dir=DUMMY["bone_mri"])
    return str(directory)


@pytest.fixture(scope="module")
def tiny_phantom(tmp_path_factory):
    config = SyntheticSijConfig(name="tiny", phantom=phantom.PhantomConfig(size=128, slices_per_patient=TINY_SLICES),
                                seed=1, train_patients=TINY_PATIENTS["train"], val_patients=TINY_PATIENTS["val"],
                                test_patients=TINY_PATIENTS["test"])
    builder = SyntheticSij(config=config, data_dir=str(tmp_path_factory.mktemp("phantom")),
                           file_format="array_record")
    builder.download_and_prepare(file_format="array_record")
    return builder


# ---- Table 1 --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("plane", ("axial", "coronal"))
def test_elazig_counts_equal_the_folder_and_the_build_report(data_dir, plane):
    d = read_distribution(f"elazig/{plane}", data_dir)
    assert d.built and d.planes == (plane,)
    assert dict(d.total().images) == elazig_class_counts(plane)
    from_report = report_counts(read_metadata(data_dir, f"elazig/{plane}"))
    counted = {(split, label): (counts.images[label], counts.patients_of(label))
               for split, counts in d.splits.items() for label in counts.images}
    assert counted == from_report
    assert d.skipped_files == (len(elazig_dummy.DAMAGED) if plane == "axial" else 0)
    assert d.ignored_files == 2 and d.preprocess["size"] == 256 and d.preprocess["clahe_clip_limit"] == 2.0


@pytest.mark.parametrize("plane", ("axial", "coronal"))
def test_asas_is_test_only_with_its_cases_from_labels_csv(data_dir, plane):
    d = read_distribution(f"asas/{plane}", data_dir)
    cases = asas_cases(plane)
    assert list(d.splits) == ["test"] and d.external_only()
    assert dict(d.total().images) == collections.Counter(cases.values())
    assert {label: d.total().patients_of(label) for label in d.total().images} == collections.Counter(cases.values())


@pytest.mark.parametrize("plane", ("axial", "coronal"))
def test_radiopaedia_counts_equal_cases_csv(data_dir, plane):
    d = read_distribution(f"radiopaedia/{plane}", data_dir)
    rows = radiopaedia_rows(plane)
    assert dict(d.total().images) == {"healthy": len(rows)}
    assert d.total().total_patients == len({r["case_id"] for r in rows})
    counted = {(split, "healthy"): (c.total_images, c.total_patients) for split, c in d.splits.items()}
    assert counted == report_counts(read_metadata(data_dir, f"radiopaedia/{plane}"))
    # The row without an author, of either plane: each plane's build reads the whole table.
    assert d.skipped_files == len([r for r in table_rows(DUMMY["radiopaedia"] / "cases.csv") if not r["author"]])


def test_bone_mri_counts_equal_its_shard_lengths_and_split_patients(data_dir):
    d = read_distribution("bone_mri/stir", data_dir)
    metadata = read_metadata(data_dir, "bone_mri/stir")
    info = get_builder("bone_mri/stir", data_dir=data_dir).info
    assert {s: c.total_images for s, c in d.splits.items()} == {s: info.splits[s].num_examples for s in info.splits}
    assert {s: c.total_patients for s, c in d.splits.items()} == {s: len(p) for s, p in
                                                                  metadata["split_patients"].items()}
    assert d.main_splits == ["train", "val", "test"] and "unlabeled" in d.other_splits
    assert set(d.splits["unlabeled"].images) == {"unlabeled"}  # label -1, not the last class name
    assert d.total().total_images == sum(info.splits[s].num_examples for s in ("train", "val", "test"))


def test_a_tiny_phantom_counts_its_patients_and_slices(tiny_phantom):
    d = distribution_of(tiny_phantom, "synthetic_sij/tiny")
    for split, patients in TINY_PATIENTS.items():
        assert d.splits[split].total_images == patients * TINY_SLICES
        assert d.splits[split].total_patients == patients
    labels = collections.Counter(int(r["label"]) for s in TINY_PATIENTS for r in tiny_phantom.as_data_source(s))
    assert sorted(d.total().images.values()) == sorted(labels.values())
    assert d.preprocess is None and d.other_settings["seed"] == 1 and "PhantomConfig" in d.other_settings["phantom"]


def test_table1_files_list_every_build_and_the_papers_totals(data_dir, tmp_path):
    out = tmp_path / "out"
    assert run_main(main, [f"--data_dir={data_dir}", "--datasets", "bone_mri/stir", f"--out={out}"]) == 0
    rows = _csv_rows(out / "table1.csv")
    totals = {(r["source"], r["config"]): r for r in rows if r["split"] == "total" and r["class"] == "all"
              and r["status"] == "built"}
    for name in [*MANUAL, "bone_mri/stir"]:
        source, config = name.split("/")
        assert int(totals[(source, config)]["images"]) == read_distribution(name, data_dir).total().total_images
    assert sum(int(totals[("elazig", p)]["images"]) for p in ("axial", "coronal")) == sum(
        sum(elazig_class_counts(p).values()) for p in ("axial", "coronal"))
    assert {r["split"] for r in rows if r["source"] == "asas"} <= {"test", "total"}
    paper = {r["source"]: int(r["images"]) for r in rows if r["status"] == "paper (published)"}
    assert paper == {"elazig": 4115, "asas": 213, "radiopaedia": 102}
    md = (out / "tables.md").read_text()
    assert "| asas | axial | axial | test only (external) |" in md
    assert "4,115 images" in md and "213 images; expert-annotated; external validation only" in md
    assert "not built there: none" in md and "Tables made with `python scripts/paper_tables.py" in md
    assert "No baseline grid workdir given" in md
    for name in ("Axial/Normal/broken.png", "case_105", "normal_sij_8", "bone_mri_subject"):
        assert name not in md and name not in (out / "table1.csv").read_text()  # counts only, no file or patient
    tex = (out / "tables.tex").read_text()
    assert r"\begin{tabular}" in tex and "% Datasets read from" in tex


def test_a_paper_source_that_is_not_built_is_listed_as_not_built(tmp_path):
    data_dir = tmp_path / "tfds"
    build("asas/axial", data_dir=data_dir, manual_dir=DUMMY["asas"])
    out = tmp_path / "out"
    assert run_main(main, [f"--data_dir={data_dir}", f"--out={out}"]) == 0
    status = {(r["source"], r["config"]): r["status"] for r in _csv_rows(out / "table1.csv") if r["config"]}
    assert status[("asas", "axial")] == "built"
    for name in ("asas/coronal", "elazig/axial", "elazig/coronal", "radiopaedia/axial", "radiopaedia/coronal"):
        assert status[tuple(name.split("/"))] == "not built", name
    md = (out / "tables.md").read_text()
    assert "| elazig | not built | not built | not built |" in md
    assert "| radiopaedia | coronal | – | not built |" in md


def test_an_unknown_dataset_is_one_line_naming_it(tmp_path, capsys):
    assert run_main(main, [f"--data_dir={tmp_path}", "--datasets", "elazig/sagittal", f"--out={tmp_path}"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: elazig/sagittal: ") and "sagittal not found" in error
    assert error.count("\n") == 1


# ---- Table 2 --------------------------------------------------------------------------------------------------

PATIENTS, SLICES, SEEDS = 12, 4, (0, 1)
MODELS = ("asemblenet", "resnet50", "xception", "inception_v3")
EXTERNAL_PATIENTS = 10


def _predictions(model: str, seed: int, role: str) -> tables.Predictions:
    """Noisy scores with a per-patient effect; each model and seed its own draw."""
    patients = PATIENTS if role == "test" else EXTERNAL_PATIENTS
    labels = np.repeat(np.arange(patients) % 2, SLICES)
    rng = np.random.default_rng([MODELS.index(model), seed, role == "test"])
    scores = 1.5 * (labels - 0.5) + np.repeat(rng.normal(0, 0.6, patients), SLICES) + rng.normal(0, 1, labels.size)
    ids = np.repeat([f"{role}-patient{i:02d}" for i in range(patients)], SLICES)
    return tables.Predictions(labels, 1 / (1 + np.exp(-scores)), ids, np.full(labels.size, 0.5))


def _baseline_grid(models=MODELS) -> Grid:
    cells = tuple(
        Cell(name=f"coronal/{model}/seed{seed}", factors={"dataset": "synthetic_sij/coronal", "model": model,
                                                          "seed": seed},
             config=f"ablations/base.py:model={model},preset=tiny,dataset=synthetic_sij/coronal,seed={seed}",
             overrides={"total_steps": 20, "data.image_size": 80},
             evaluations=(Evaluation("test", "synthetic_sij/coronal", "test"),
                          Evaluation("external", "synthetic_sij/shifted", "test")))
        for seed in SEEDS for model in models)
    return Grid("baselines", cells, TableSpec(arm="model", reference="asemblenet", pooled=("fold",),
                                              tests=("paired_bootstrap", "mcnemar", "delong")),
                spec="ablations/baselines.py:size=80,steps=20,seeds=2,planes=coronal")


def _write_cell(workdir: str, cell: Cell) -> None:
    """A finished cell as grids/cell.py records one, with its test predictions as evaluation.evaluate writes them."""
    directory = runner.cell_dir(workdir, cell)
    evaluations = []
    for evaluation in cell.evaluations:
        predictions = _predictions(cell.factors["model"], cell.factors["seed"], evaluation.role)
        relative = os.path.join("eval", f"{evaluation.role}_predictions.csv")
        lines = ["example,patient_id,label,probability"] + [
            f"{i},{p},{y},{float(q)!r}" for i, (p, y, q) in enumerate(zip(predictions.patients, predictions.labels,
                                                                           predictions.probabilities))]
        atomic_io.write_text(os.path.join(directory, relative), "\n".join(lines) + "\n")
        evaluations.append({"role": evaluation.role, "dataset": evaluation.dataset, "split": evaluation.split,
                            "predictions": relative, "thresholds": {"0.5": 0.5, "youden": 0.5}})
    atomic_io.write_json(Workdir(directory).cell_record, {
        "name": cell.name, "status": "done", "error": None, "factors": dict(cell.factors), "config": cell.config,
        "overrides": dict(cell.overrides), "total_steps": 20, "global_batch_size": 32, "image_size": 80,
        "wall_time_s": 60.0, "gflops": 0.1, "params": 1000 * (1 + MODELS.index(cell.factors["model"])),
        "train_images_per_second": 50.0,
        "provenance": {"git_commit": "abc1234", "machine": "test", "versions": {"jax": "0.10.2"}},
        "evaluations": evaluations})


@pytest.fixture
def grid_workdir(tmp_path):
    workdir = str(tmp_path / "grid")
    grid = _baseline_grid()
    runner.write_grid_record(grid, workdir, "python scripts/run_ablations.py --grid=ablations/baselines.py:size=80,"
                                            "steps=20,seeds=2,planes=coronal --workdir=grid")
    for cell in grid.cells:
        _write_cell(workdir, cell)
    return workdir


def test_table2_equals_the_grids_own_tables_for_the_same_cells(grid_workdir, tmp_path):
    write_tables(grid_workdir, str(tmp_path / "grid_tables"), command="make_tables", n_resamples=RESAMPLES)
    ours = tmp_path / "paper"
    assert run_main(main, [f"--data_dir={tmp_path / 'none'}", "--grid_workdir", grid_workdir, f"--out={ours}",
                           f"--n_resamples={RESAMPLES}"]) == 0
    grid_rows = {(r["role"], r["arm"]): r for r in _csv_rows(tmp_path / "grid_tables" / "tables.csv")}
    paper_rows = {(r["role"], r["model"]): r for r in _csv_rows(ours / "table2.csv")}
    assert set(grid_rows) == {(role, m) for role in ("test", "external") for m in MODELS}
    assert set(grid_rows) < set(paper_rows)  # and the reference row of the test table
    for key, expected in grid_rows.items():
        got = paper_rows[key]
        assert got["seeds"] == expected["seeds"] == "0 1" and got["params"] == expected["params"]
        for metric in ("auc", "accuracy", "f1", "recall", "specificity"):
            for stat in ("mean", "sd"):
                assert float(got[f"{metric}_{stat}"]) == float(expected[f"{metric}_{stat}"]), (key, metric, stat)
            assert float(got[f"{metric}_ci_low"]) <= float(got[f"{metric}_mean"]) <= float(got[f"{metric}_ci_high"])
        precision = [tables.run_metrics(_predictions(key[1], s, key[0]))["precision"] for s in SEEDS]
        assert float(got["precision_mean"]) == pytest.approx(np.mean(precision))
    reference = paper_rows[("test", "asemblenet (paper, abstract)")]
    assert float(reference["accuracy_mean"]) == 0.99 and reference["plane"] == "coronal"
    assert ("external", "asemblenet (paper, abstract)") not in paper_rows
    assert (ours / "table2.csv").read_text().startswith("# Grid `ablations/baselines.py:size=80")


def test_table2_rows_come_in_the_papers_order_beside_the_abstract(grid_workdir, tmp_path):
    out = tmp_path / "paper"
    paper_tables.write_paper_tables(str(out), data_dir=str(tmp_path / "none"), datasets=[],
                                    grid_workdirs=[grid_workdir], command="test", n_resamples=RESAMPLES)
    md = (out / "tables.md").read_text()
    test_section = md.split("### synthetic_sij/coronal, test")[1].split("###")[0]
    order = [line.split(" | ")[0].lstrip("| ") for line in test_section.splitlines() if line.startswith("| ")][1:]
    assert order == ["ASembleNet", "Xception", "ResNet50", "InceptionV3", "ASembleNet, paper (abstract)"]
    assert "| ASembleNet, paper (abstract) | – | 0.99 (99%) | not published |" in test_section
    external = md.split("### synthetic_sij/coronal, external")[1]
    assert "| ASembleNet, paper (abstract) | – | not published |" in external
    for text in ("20 training steps of 32 images per run (640 images seen)", "80 pixels a side",
                 "the paper's 256x256", "`tiny` preset", "4,115 Elazig images", "Grid `ablations/baselines.py",
                 "synthetic_sij/shifted:test (40 slices, 10 patients)"):
        assert text in md, text
    tex = (out / "tables.tex").read_text()
    assert r"\label{tab:paper_table2_synthetic_sij_coronal_test}" in tex and r"$\pm$" in tex


def test_a_model_left_out_of_the_grid_is_named_and_a_component_grid_refused(tmp_path):
    workdir = str(tmp_path / "grid")
    grid = _baseline_grid(models=("asemblenet", "resnet50"))
    runner.write_grid_record(grid, workdir, "python scripts/run_ablations.py")
    for cell in grid.cells:
        _write_cell(workdir, cell)
    _, _, papers = paper_tables.collect_table2(workdir, n_resamples=RESAMPLES)
    rows = {row[0]: row[1] for row in paper_tables.table2_rows(papers[0])}
    assert rows["Xception"] == rows["InceptionV3"] == "not in this grid" and rows["ResNet50"] == "2"

    components = str(tmp_path / "components")
    cell = Cell("coronal/full/seed0", {"dataset": "synthetic_sij/coronal", "variant": "full", "seed": 0},
                "ablations/base.py", {}, (Evaluation("test", "synthetic_sij/coronal", "test"),))
    runner.write_grid_record(Grid("components", (cell,), TableSpec(arm="variant", reference="full")), components,
                             "python scripts/run_ablations.py")
    with pytest.raises(tables.TableError, match="Table 2 needs a baseline grid"):
        paper_tables.collect_table2(components)


def test_one_seeds_interval_is_the_patient_bootstrap_of_that_run():
    run = _predictions("xception", 0, "test")
    ours = tables.seed_averaged_intervals({0: run}, paper_tables.PAPER_METRICS, n_resamples=RESAMPLES)
    theirs = bootstrap_metrics(run.labels, run.probabilities, run.patients, n_resamples=RESAMPLES)
    for metric in paper_tables.PAPER_METRICS:
        assert (ours[metric].estimate, ours[metric].n_patients) == (theirs[metric].estimate, PATIENTS)
        assert ours[metric].low == pytest.approx(theirs[metric].low)
        assert ours[metric].high == pytest.approx(theirs[metric].high)
    two = tables.seed_averaged_intervals({0: run, 1: _predictions("xception", 1, "test")}, ("auc",),
                                         n_resamples=RESAMPLES)
    assert two["auc"].estimate == pytest.approx(np.mean([tables.run_metrics(_predictions("xception", s, "test"))["auc"]
                                                         for s in SEEDS]))
