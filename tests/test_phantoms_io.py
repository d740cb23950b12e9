"""Files written by the phantom generator: layout, readers, DICOM round trip, determinism, atomicity."""
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "datasets"))

import phantom_ct  # noqa: E402
from phantom_ct import generate_case, generate_dataset, load_label_space, write_case  # noqa: E402

SMALL_ARGS = ["--shape", "64,64,40", "--spacing", "6,6,8"]
FILE_NAMES = {c["index"]: c["file_name"] for c in load_label_space()["classes"]}


def run_cli(out, *extra):
    cmd = [sys.executable, str(ROOT / "datasets" / "phantoms.py"), "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms") / "run1"
    result = run_cli(out, "--cases", "3", "--seed", "5", "--dicom", "--preview", *SMALL_ARGS)
    assert result.returncode == 0, result.stderr
    return out, result


def test_layout_and_datalist(dataset):
    out, result = dataset
    datalist = json.loads((out / "datalist.json").read_text())
    assert set(datalist) == {"training", "validation", "test"}
    entries = [e for key in datalist for e in datalist[key]]
    assert sorted(e["case"] for e in entries) == ["case_0000", "case_0001", "case_0002"]
    for entry in entries:
        assert entry["image"] == f"{entry['case']}/ct.nii.gz"
        assert entry["label"] == f"{entry['case']}/combined_labels.nii.gz"
        assert (out / entry["image"]).is_file() and (out / entry["label"]).is_file()
    for case in ("case_0000", "case_0001", "case_0002"):
        meta = json.loads((out / case / "meta.json").read_text())
        for key in ("seed", "phase", "sex", "spacing_mm", "orientation", "lesions"):
            assert key in meta
        written = sorted(p.name for p in (out / case / "segmentations").iterdir())
        expected = sorted(f"{FILE_NAMES[i]}.nii.gz" for i in set(meta["classes_present"]) | set(meta["organs_present"]))
        assert written == expected
        assert (out / case / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {json.loads((out / c / "meta.json").read_text())["orientation"] for c in ("case_0000", "case_0001")} \
        == {"RAS", "LPS"}
    assert "case_0000" in result.stdout and "lesions" in result.stdout      # summary table


def test_nifti_readable_by_nibabel_and_itk(dataset):
    import itk
    out, _ = dataset
    for case in ("case_0000", "case_0001"):
        ct = nib.load(out / case / "ct.nii.gz")
        labels = nib.load(out / case / "combined_labels.nii.gz")
        assert ct.get_data_dtype() == np.int16 and labels.get_data_dtype() == np.uint8
        assert ct.shape == labels.shape == (64, 64, 40)
        assert np.allclose(ct.affine, labels.affine)
        meta = json.loads((out / case / "meta.json").read_text())
        assert np.allclose(ct.affine, meta["affine"])
        image = itk.imread(str(out / case / "ct.nii.gz"))
        assert np.array_equal(itk.array_view_from_image(image), np.asarray(ct.dataobj).T)
        liver = np.asarray(nib.load(out / case / "segmentations" / "liver.nii.gz").dataobj)
        assert set(np.unique(liver).tolist()) == {0, 1}


def _pydicom_volume(folder):
    slices = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    normal = np.cross(np.array(slices[0].ImageOrientationPatient[:3], float),
                      np.array(slices[0].ImageOrientationPatient[3:], float))
    slices.sort(key=lambda s: float(np.dot(normal, np.array(s.ImagePositionPatient, float))))
    hu = np.stack([s.pixel_array.astype(np.float64) * float(s.RescaleSlope) + float(s.RescaleIntercept)
                   for s in slices], axis=-1)
    return slices, hu


@pytest.mark.parametrize("case", ["case_0000", "case_0001"])
def test_dicom_round_trip_matches_nifti(dataset, case):
    import itk
    out, _ = dataset
    ct = nib.load(out / case / "ct.nii.gz")
    data = np.asarray(ct.dataobj)
    slices, hu = _pydicom_volume(out / case / "dicom")
    first = slices[0]
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert len({s.StudyInstanceUID for s in slices}) == len({s.SeriesInstanceUID for s in slices}) == 1
    assert len({s.FrameOfReferenceUID for s in slices}) == 1
    assert len({s.SOPInstanceUID for s in slices}) == len(slices) == data.shape[2]
    # pydicom pixel_array is (rows, columns) = (array axis 1, array axis 0)
    assert np.abs(hu.transpose(1, 0, 2) - data).max() <= 1
    # geometry: DICOM LPS = RAS affine with x, y negated
    lps = np.diag([-1, -1, 1, 1]) @ ct.affine
    assert np.allclose(np.array(first.ImagePositionPatient, float), lps[:3, 3], atol=1e-3)
    assert np.allclose(float(first.SliceThickness), abs(ct.affine[2, 2]))
    itk_dicom = itk.imread(str(out / case / "dicom"))
    itk_nifti = itk.imread(str(out / case / "ct.nii.gz"))
    assert np.abs(itk.array_from_image(itk_dicom).astype(float) - itk.array_from_image(itk_nifti)).max() <= 1
    assert np.allclose(itk_dicom.GetSpacing(), itk_nifti.GetSpacing(), atol=1e-4)
    assert np.allclose(itk_dicom.GetOrigin(), itk_nifti.GetOrigin(), atol=1e-3)
    assert np.allclose(itk.array_from_matrix(itk_dicom.GetDirection()),
                       itk.array_from_matrix(itk_nifti.GetDirection()), atol=1e-5)


def test_same_arguments_give_byte_identical_files(dataset, tmp_path):
    out, _ = dataset
    again = tmp_path / "run2"
    result = run_cli(again, "--cases", "3", "--seed", "5", "--dicom", "--preview", "--quiet", *SMALL_ARGS)
    assert result.returncode == 0, result.stderr
    first = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert first == second
    different = [str(p) for p in first if (out / p).read_bytes() != (again / p).read_bytes()]
    assert not different, f"files differ between identical runs: {different[:5]}"


def _complete(folder):
    needed = ["ct.nii.gz", "combined_labels.nii.gz", "meta.json", "segmentations"]
    return all((folder / n).exists() for n in needed)


def test_failure_mid_write_leaves_no_case(tmp_path, monkeypatch):
    case = generate_case(3, shape=(48, 48, 32), spacing=(8.0, 8.0, 10.0))
    calls = {"n": 0}
    real = phantom_ct.io.json_bytes

    def exploding_json_bytes(obj):                      # meta.json is the last file of a case
        calls["n"] += 1
        raise OSError("simulated disk full")

    monkeypatch.setattr(phantom_ct.io, "json_bytes", exploding_json_bytes)
    with pytest.raises(OSError):
        write_case(case, tmp_path, "case_0000")
    assert calls["n"] == 1
    assert list(tmp_path.iterdir()) == []               # neither the case nor a partial folder
    monkeypatch.setattr(phantom_ct.io, "json_bytes", real)
    assert _complete(write_case(case, tmp_path, "case_0000"))


def test_interrupted_dataset_keeps_only_complete_cases(tmp_path, monkeypatch):
    real = phantom_ct.io._write_case_files
    count = {"n": 0}

    def interrupted(case, folder, *args):
        count["n"] += 1
        if count["n"] == 2:
            (folder / "segmentations").mkdir(parents=True)
            (folder / "ct.nii.gz").write_bytes(b"half")
            raise KeyboardInterrupt
        return real(case, folder, *args)

    monkeypatch.setattr(phantom_ct.io, "_write_case_files", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path, 3, 0, shape=(48, 48, 32), spacing=(8.0, 8.0, 10.0), progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["case_0000"]                       # no case_0001, no datalist.json, no partials
    assert _complete(tmp_path / "case_0000")
