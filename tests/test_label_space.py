"""datasets/label_space.json is the single source of truth for classes; every bundle must agree with it."""
import json
import re

import pytest

from conftest import REPO_ROOT

LABEL_SPACE_PATH = REPO_ROOT / "datasets" / "label_space.json"
# AbdomenAtlas 1.1 mask names (SuPreM class map) plus the seven lesion masks.
ABDOMENATLAS_11_NAMES = {
    "aorta", "adrenal_gland_left", "adrenal_gland_right", "bladder", "celiac_trunk", "colon", "duodenum", "esophagus",
    "femur_left", "femur_right", "gall_bladder", "hepatic_vessel", "intestine", "kidney_left", "kidney_right", "liver",
    "lung_left", "lung_right", "pancreas", "portal_vein_and_splenic_vein", "postcava", "prostate", "rectum", "spleen",
    "stomach",
}


@pytest.fixture(scope="module")
def label_space():
    return json.loads(LABEL_SPACE_PATH.read_text())


def test_universal_model_order_and_count(label_space):
    classes = label_space["classes"]
    assert [c["index"] for c in classes] == list(range(1, 33))
    names = [c["name"] for c in classes]
    assert names[0] == "Spleen" and names[5] == "Liver" and names[7] == "Aorta"
    assert names[24] == "Celiac Trunk" and names[25] == "Kidney Tumor" and names[31] == "Kidney Cyst"
    assert len(set(names)) == 32


def test_file_names_are_abdomenatlas_names(label_space):
    organs = [c for c in label_space["classes"] if c["kind"] != "lesion"]
    assert {c["file_name"] for c in organs} == ABDOMENATLAS_11_NAMES
    file_names = [c["file_name"] for c in label_space["classes"]]
    assert len(set(file_names)) == 32
    assert all(re.fullmatch(r"[a-z_]+", name) for name in file_names)


def test_prompts_and_kinds(label_space):
    for cls in label_space["classes"]:
        assert cls["prompt"].startswith("A computerized tomography of a "), cls
        assert cls["kind"] in {"organ", "vessel", "bone", "lesion"}
    spelled = " ".join(c["prompt"] for c in label_space["classes"])
    assert "arota" not in spelled.lower() and "truck" not in spelled.lower()


def test_lesions_name_existing_host_organs(label_space):
    by_index = {c["index"]: c for c in label_space["classes"]}
    lesions = [c for c in label_space["classes"] if c["kind"] == "lesion"]
    assert [c["index"] for c in lesions] == list(range(26, 33))
    for lesion in lesions:
        assert lesion["host_organs"], lesion
        for host in lesion["host_organs"]:
            assert by_index[host]["kind"] in {"organ", "vessel"}, (lesion["name"], host)
    assert by_index[27]["host_organs"] == [6] and by_index[28]["host_organs"] == [11]
    assert sorted(by_index[26]["host_organs"]) == [2, 3] and sorted(by_index[32]["host_organs"]) == [2, 3]


def test_bundle_copies_are_verbatim(label_space):
    copies = sorted(REPO_ROOT.glob("bundles/*/configs/label_space.json"))
    for copy in copies:
        assert json.loads(copy.read_text()) == label_space, f"{copy} differs from {LABEL_SPACE_PATH}"


def test_bundle_channel_names_come_from_label_space(label_space):
    names = {c["name"] for c in label_space["classes"]}
    for metadata_path in sorted(REPO_ROOT.glob("bundles/*/configs/metadata.json")):
        outputs = json.loads(metadata_path.read_text()).get("network_data_format", {}).get("outputs", {})
        for output in outputs.values():
            channel_names = [v for v in output.get("channel_def", {}).values() if v.lower() != "background"]
            unknown = [n for n in channel_names if n not in names]
            assert not unknown, f"{metadata_path}: channel names not in the label space: {unknown}"
            if output.get("num_channels") == 32 and len(channel_names) == 32:
                ordered = [output["channel_def"][str(i)] for i in range(32)]
                assert ordered == [c["name"] for c in label_space["classes"]], metadata_path
