"""Repository layout promises from the design card."""
import importlib.metadata

from conftest import REPO_ROOT


def test_top_level_layout():
    for name in ("bundles", "monailabel_app", "datasets", "tests", "docs", "benchmarks", ".ci/run", "setup.cfg",
                 "pyproject.toml", "README.md", "Makefile"):
        assert (REPO_ROOT / name).exists(), name


def test_no_importable_datasets_package():
    # A package called `datasets` would shadow Hugging Face's; datasets/ holds scripts and data only.
    assert not (REPO_ROOT / "datasets" / "__init__.py").exists()
    top_level = importlib.metadata.distribution("atlasforge").read_text("top_level.txt") or ""
    assert "datasets" not in top_level.split()


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
