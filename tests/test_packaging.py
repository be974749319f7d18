"""The installed package layout: every code folder is shipped, and datasets/ never shadows Hugging Face's."""
import pathlib
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[1]


def _declared_packages() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def _package_folders() -> set[str]:
    found = set()
    for init in REPO.glob("asemble_jax/**/__init__.py"):
        found.add(".".join(init.parent.relative_to(REPO).parts))
    for init in REPO.glob("datasets/*/__init__.py"):
        found.add("asemble_datasets." + init.parent.name)
    return found | {"asemble_datasets"}


def test_every_package_folder_is_declared_in_pyproject():
    missing = _package_folders() - _declared_packages()
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_declared_packages_exist():
    stale = _declared_packages() - _package_folders()
    assert not stale, f"pyproject.toml names packages with no folder: {sorted(stale)}"


def test_datasets_folder_is_not_a_regular_package():
    # A datasets/__init__.py would shadow the Hugging Face `datasets` package whenever the repo root is on sys.path.
    assert not (REPO / "datasets" / "__init__.py").exists()
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"] == {
        "asemble_datasets": "datasets"}
