"""Every bundle's configs/metadata.json passes the real `monai.bundle verify_metadata`, offline, against our schema."""
import json
import shutil

import pytest

from conftest import REPO_ROOT, run_cli

SCHEMA = REPO_ROOT / "bundles" / "metadata_schema.json"
BUNDLES = sorted(p.parent.parent for p in REPO_ROOT.glob("bundles/*/configs/metadata.json"))


def _verify(meta_file, tmp_path):
    # verify_metadata downloads the schema unless --filepath already exists: pre-place our copy there.
    schema_copy = tmp_path / "schema.json"
    shutil.copy(SCHEMA, schema_copy)
    return run_cli(["-m", "monai.bundle", "verify_metadata", "--meta_file", meta_file, "--filepath", schema_copy])


@pytest.mark.parametrize("bundle_dir", BUNDLES, ids=[b.name for b in BUNDLES])
def test_metadata_verifies(bundle_dir, tmp_path):
    result = _verify(bundle_dir / "configs" / "metadata.json", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "metadata is verified with no error" in result.stdout + result.stderr


@pytest.mark.parametrize("bundle_dir", BUNDLES, ids=[b.name for b in BUNDLES])
def test_bundle_files_present(bundle_dir):
    for required in ("LICENSE", "docs/README.md", "configs/metadata.json"):
        assert (bundle_dir / required).is_file(), f"{bundle_dir.name}: missing {required}"


def test_schema_rejects_metadata_without_authors(tmp_path):
    metadata = json.loads((REPO_ROOT / "tests" / "fixtures" / "minimal_metadata.json").read_text())
    assert _verify(REPO_ROOT / "tests" / "fixtures" / "minimal_metadata.json", tmp_path).returncode == 0
    del metadata["authors"]
    broken = tmp_path / "metadata.json"
    broken.write_text(json.dumps(metadata))
    result = _verify(broken, tmp_path)
    assert result.returncode != 0 and "'authors' is a required property" in result.stderr
