"""Every bundle packages into a zip that the real `monai.bundle download` fetches over (loopback) HTTP."""
import functools
import http.server
import json
import threading

import pytest

from conftest import REPO_ROOT, run_cli

BUNDLES = sorted(p.parent.parent for p in REPO_ROOT.glob("bundles/*/configs/metadata.json"))


@pytest.fixture
def http_root(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 for the duration of a test."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("bundle_dir", BUNDLES, ids=[b.name for b in BUNDLES])
def test_package_and_download(bundle_dir, http_root, tmp_path):
    root, url = http_root
    packaged = run_cli([REPO_ROOT / "bundles" / "package_bundle.py", bundle_dir, "--out", root])
    assert packaged.returncode == 0, packaged.stderr
    zip_name = packaged.stdout.strip().rsplit("/", 1)[-1]
    downloaded = run_cli(["-m", "monai.bundle", "download", "--name", bundle_dir.name, "--url", f"{url}/{zip_name}",
                          "--bundle_dir", tmp_path / "hub"])
    assert downloaded.returncode == 0, downloaded.stderr[-2000:]
    fetched = tmp_path / "hub" / bundle_dir.name
    assert json.loads((fetched / "configs" / "metadata.json").read_text()) == \
        json.loads((bundle_dir / "configs" / "metadata.json").read_text())
    for required in ("LICENSE", "docs/README.md"):
        assert (fetched / required).is_file(), required


def test_package_refuses_a_folder_without_metadata(tmp_path):
    result = run_cli([REPO_ROOT / "bundles" / "package_bundle.py", tmp_path, "--out", tmp_path / "dist"])
    assert result.returncode == 2
    assert "metadata.json" in result.stderr and len(result.stderr.strip().splitlines()) == 1
