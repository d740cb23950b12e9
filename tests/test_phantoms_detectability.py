"""Ideal-observer lesion detectability of phantom sets (``phantom_ct.detectability``)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "datasets"))

from phantom_ct import case_seed, generate_case  # noqa: E402
from phantom_ct.detectability import lesion_dprimes, location_threshold, signal_support  # noqa: E402
from phantom_ct.label_space import lesion_indices  # noqa: E402

SHAPE, SPACING = (96, 96, 60), (4.0, 4.0, 5.0)
SEED = 11  # dataset seed whose cases 0 and 2 hold liver, kidney and colon lesions at this grid
ALL_LESIONS = ",".join(str(c) for c in lesion_indices())


def detectability(*args):
    return subprocess.run([sys.executable, "-m", "phantom_ct.detectability", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT / "datasets")


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("detect") / "set"
    result = subprocess.run([sys.executable, str(ROOT / "datasets" / "phantoms.py"), "--out", str(out), "--cases", "3",
                             "--seed", str(SEED), "--shape", "96,96,60", "--spacing", "4,4,5", "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


def test_lesion_signal_leaves_the_case_unchanged_and_lies_on_the_lesions():
    seed = case_seed(SEED, 2)
    plain = generate_case(seed, SHAPE, SPACING)
    case = generate_case(seed, SHAPE, SPACING, lesion_signal=True)
    assert plain.lesion_signal is None
    assert np.array_equal(plain.ct, case.ct) and np.array_equal(plain.labels, case.labels)
    lesions = np.isin(case.labels, lesion_indices())
    assert lesions.any()
    assert np.all(np.abs(case.lesion_signal[lesions]) > 0)
    assert not np.any(case.lesion_signal[~signal_support(lesions, SPACING)])
    assert np.any(case.lesion_signal[~lesions])  # the partial-volume blur spreads it past the mask
    healthy = generate_case(seed, SHAPE, SPACING, healthy=True, lesion_signal=True)
    assert not np.any(healthy.lesion_signal)


def test_every_lesion_gets_all_of_its_signal_once():
    case = generate_case(case_seed(SEED, 2), SHAPE, SPACING, lesion_signal=True)
    records = lesion_dprimes(case, lesion_indices())
    assert len(records) == len(case.meta["lesions"]) == 3
    energy = sum((r["dprime"] * case.meta["noise_std_hu"]) ** 2 for r in records)
    assert energy == pytest.approx(float((case.lesion_signal.astype(np.float64) ** 2).sum()), rel=2e-3)
    assert [r["class_index"] for r in lesion_dprimes(case, [27])] == [27]


def test_location_threshold_keeps_the_specificity():
    assert location_threshold(1, 0.8) == pytest.approx(norm.ppf(0.8))
    assert location_threshold(5000, 0.8) > location_threshold(50, 0.8) > location_threshold(1, 0.8)
    rng = np.random.default_rng(0)
    maxima = rng.standard_normal((20000, 200)).max(axis=1)
    assert np.mean(maxima < location_threshold(200, 0.8)) == pytest.approx(0.8, abs=0.01)


def test_cli_reports_each_lesion_and_the_ideal_sensitivity(phantom_set, tmp_path):
    out = tmp_path / "detect.json"
    result = detectability(phantom_set, "--classes", ALL_LESIONS, "--json", out)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    stored = sum(len(json.loads((d / "meta.json").read_text())["lesions"]) for d in phantom_set.iterdir() if d.is_dir())
    assert len(report["lesions"]) == stored >= 4
    assert all(0.0 <= r["probability_found"] <= 1.0 and r["dprime"] > 0 for r in report["lesions"])
    liver = next(s for s in report["summary"] if s["class_index"] == 27)
    assert liver["positive_cases"] == 2 and 0.0 < liver["ideal_sensitivity"] <= 1.0
    assert "ideal-observer case-level sensitivity at specificity 0.8" in result.stdout


def test_cli_rejects_edited_cases_and_bad_arguments(phantom_set, tmp_path):
    edited = tmp_path / "edited"
    case = sorted(p for p in phantom_set.iterdir() if p.is_dir())[0]
    (edited / case.name).mkdir(parents=True)
    for f in ("combined_labels.nii.gz", "meta.json"):
        (edited / case.name / f).write_bytes((case / f).read_bytes())
    meta = json.loads((case / "meta.json").read_text())
    (edited / case.name / "meta.json").write_text(json.dumps({**meta, "seed": meta["seed"] + 1}))
    result = detectability(edited)
    assert result.returncode == 2
    assert "combined_labels.nii.gz" in result.stderr and "does not match" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    (edited / case.name / "meta.json").write_bytes((case / "meta.json").read_bytes())
    (edited / case.name / "combined_labels.nii.gz").write_bytes(b"not a nifti")
    result = detectability(edited)
    assert result.returncode == 2 and "combined_labels.nii.gz: cannot read" in result.stderr, result.stderr
    for args, message in (([tmp_path / "empty"], "no phantom case folders"),
                          ([phantom_set, "--classes", "6"], "not lesion classes"),
                          ([phantom_set, "--specificity", "1.5"], "between 0 and 1")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        result = detectability(*args)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_a_healthy_set_has_nothing_to_detect(tmp_path):
    out = tmp_path / "healthy"
    made = subprocess.run([sys.executable, str(ROOT / "datasets" / "phantoms.py"), "--out", str(out), "--cases", "2",
                           "--seed", str(SEED), "--shape", "96,96,60", "--spacing", "4,4,5", "--healthy", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    result = detectability(out, "--json", tmp_path / "h.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "h.json").read_text())
    assert report["cases"] == 2 and report["lesions"] == []
    assert all(s["positive_cases"] == 0 and s["ideal_sensitivity"] is None for s in report["summary"])
