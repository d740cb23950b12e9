"""Command line of the phantom generator: bad arguments exit 2 with one line on stderr."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = str(ROOT / "datasets" / "phantoms.py")


def run(*args):
    return subprocess.run([sys.executable, CLI, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def a_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "not_a_folder"
    path.write_text("x")
    return path


BAD = {
    "negative cases": ["--cases", "-1", "--seed", "0"],
    "zero cases": ["--cases", "0", "--seed", "0"],
    "negative seed": ["--cases", "1", "--seed", "-3"],
    "non-integer cases": ["--cases", "two", "--seed", "0"],
    "zero-size shape": ["--cases", "1", "--seed", "0", "--shape", "0,64,64"],
    "two-value shape": ["--cases", "1", "--seed", "0", "--shape", "64,64"],
    "text shape": ["--cases", "1", "--seed", "0", "--shape", "a,b,c"],
    "huge shape": ["--cases", "1", "--seed", "0", "--shape", "1024,1024,1024"],
    "negative spacing": ["--cases", "1", "--seed", "0", "--spacing", "-1,1,1"],
    "bad sex": ["--cases", "1", "--seed", "0", "--sex", "other"],
    "zero workers": ["--cases", "1", "--seed", "0", "--workers", "0"],
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_arguments_exit_2_with_one_line(name, tmp_path):
    result = run("--out", str(tmp_path / "out"), *BAD[name])
    assert result.returncode == 2, (name, result.stderr)
    lines = result.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("phantoms.py: error:"), result.stderr
    assert not (tmp_path / "out" / "case_0000").exists()


def test_unwritable_folder_exits_2(a_file):
    result = run("--out", str(a_file / "sub"), "--cases", "1", "--seed", "0", "--shape", "48,48,32",
                 "--spacing", "8,8,10")
    assert result.returncode == 2
    lines = result.stderr.strip("\n").split("\n")
    assert len(lines) == 1 and "not writable" in lines[0] and str(a_file) in lines[0]


def test_missing_required_argument_exits_2(tmp_path):
    result = run("--out", str(tmp_path))
    assert result.returncode == 2 and len(result.stderr.strip("\n").split("\n")) == 1


def test_good_run_prints_summary(tmp_path):
    result = run("--out", str(tmp_path), "--cases", "1", "--seed", "0", "--shape", "48,48,32",
                 "--spacing", "8,8,10", "--sex", "female", "--healthy")
    assert result.returncode == 0, result.stderr
    assert "case_0000" in result.stdout and "female" in result.stdout and "none" in result.stdout


def test_parallel_workers_write_the_same_files(tmp_path):
    tiny = ["--cases", "3", "--seed", "5", "--shape", "48,48,32", "--spacing", "8,8,10", "--quiet"]
    assert run("--out", str(tmp_path / "serial"), *tiny).returncode == 0
    parallel = run("--out", str(tmp_path / "parallel"), *tiny, "--workers", "2")
    assert parallel.returncode == 0, parallel.stderr
    files = sorted(p.relative_to(tmp_path / "serial") for p in (tmp_path / "serial").rglob("*") if p.is_file())
    assert len(files) > 6 and files == sorted(
        p.relative_to(tmp_path / "parallel") for p in (tmp_path / "parallel").rglob("*") if p.is_file())
    for rel in files:
        assert (tmp_path / "serial" / rel).read_bytes() == (tmp_path / "parallel" / rel).read_bytes(), rel
