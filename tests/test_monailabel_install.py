"""The MONAI Label server stack installs consistently: the app interface imports and a trivial app serves over HTTP."""
import os
import subprocess
import sys
import time

import pytest
import requests

from conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.slow


def test_app_interface_imports_with_pinned_dicom_stack():
    # pydicom-seg 0.4.1 breaks on pydicom 3; setup.cfg pins the pydicom-2 set, so this import must work.
    import pydicom
    import monailabel.interfaces.app  # noqa: F401

    assert pydicom.__version__.startswith("2.")


def test_trivial_app_serves_info_and_next_sample(tmp_path):
    studies = tmp_path / "studies"
    studies.mkdir()
    import nibabel as nib
    import numpy as np

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4)), studies / "case_0000.nii.gz")
    port = free_port()
    env = dict(os.environ, MONAI_LABEL_AUTO_UPDATE_SCORING="false",
               MONAI_LABEL_SESSION_PATH=str(tmp_path / "sessions"))
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "monailabel.main", "start_server", "--app",
         str(REPO_ROOT / "tests" / "fixtures" / "trivial_monailabel_app"), "--studies", str(studies),
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        info = _wait_for_info(f"http://127.0.0.1:{port}", server, tmp_path / "server.log")
        assert info["name"] == "AtlasForge trivial app"
        assert "random" in info["strategies"]
        sample = requests.post(f"http://127.0.0.1:{port}/activelearning/random", json={}, timeout=30)
        assert sample.status_code == 200, sample.text
        assert sample.json()["id"] == "case_0000"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _wait_for_info(url, server, log_path, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"server exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            reply = requests.get(f"{url}/info/", timeout=5)
            if reply.status_code == 200:
                return reply.json()
        except requests.ConnectionError:
            pass
        time.sleep(1)
    pytest.fail(f"server did not answer /info/ within {timeout_s} s:\n{log_path.read_text()[-3000:]}")
