"""configs/train.json and multi_gpu_train.json through the real `python -m monai.bundle run` CLI, on tiny data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from universal_train_data import BUNDLE, TINY_TRAIN_ARGS, write_phantoms
from universal_model.label_space import channel_def
from universal_model.network import UniversalModel
from universal_model.partial_labels import write_partial_datalist


def _data(tmp_path: Path, cases: int, num_val: int) -> Path:
    root = write_phantoms(tmp_path / "phantoms", cases=cases)
    write_partial_datalist(root, num_val=num_val)
    return root


def _run(cmd, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=BUNDLE, capture_output=True, text=True, timeout=600, env=env)
    (tmp_path / "log.txt").write_text(r.stdout + r.stderr)
    return r


def _load_tiny(model_file: Path) -> UniversalModel:
    net = UniversalModel(img_size=(32, 32, 32), feature_size=4, backbone_kwargs={"depth": 2})
    net.load_state_dict(torch.load(model_file, weights_only=True), strict=True)
    return net


def test_train_one_iteration_cli(tmp_path):
    data = _data(tmp_path, cases=3, num_val=1)
    models = tmp_path / "models"
    r = _run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
              "--dataset_dir", str(data), "--ckpt_dir", str(models), *TINY_TRAIN_ARGS], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "train_loss" in r.stdout + r.stderr and "val_mean_dice" in r.stdout + r.stderr
    for name in ("model.pt", "model_final.pt"):
        _load_tiny(models / name)


def _make_paths_relative(root: Path) -> None:
    """Rewrite the datalist's image/label paths relative to its own folder (how converted datasets ship)."""
    path = root / "datalist_partial.json"
    d = json.loads(path.read_text())
    for e in d["training"] + d["validation"]:
        for k in ("image", "label"):
            e[k] = os.path.relpath(e[k], root)
    path.write_text(json.dumps(d))


def test_fine_tune_starts_from_initial_weights(tmp_path):
    """--initial_weights loads a checkpoint before training (fine-tuning); with lr 0 the weights come back unchanged.

    The datalist's paths are relative to its folder, not to the working directory (the bundle folder).
    """
    data = _data(tmp_path, cases=2, num_val=1)
    _make_paths_relative(data)
    torch.manual_seed(1234)  # not the run's seed 0: a run that ignored --initial_weights would differ
    start = UniversalModel(img_size=(32, 32, 32), feature_size=4, backbone_kwargs={"depth": 2})
    torch.save(start.state_dict(), tmp_path / "start.pt")
    models = tmp_path / "models"
    r = _run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
              "--dataset_dir", str(data), "--ckpt_dir", str(models), *TINY_TRAIN_ARGS,
              "--initial_weights", str(tmp_path / "start.pt"), "--learning_rate", "0.0"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    final = _load_tiny(models / "model_final.pt").state_dict()
    assert all(torch.equal(v, final[k]) for k, v in start.state_dict().items())


@pytest.mark.parametrize("initial_weights, max_epochs, warmup", [("", 400, 20), ("", 10, 1), ("w.pt", 400, 0)])
def test_fine_tuning_starts_at_the_full_learning_rate(initial_weights, max_epochs, warmup):
    """A run from scratch warms up for 5 % of its epochs (at least 1); a run from --initial_weights does not: with
    --time_budget_minutes and a nominal --max_epochs 400 it would spend the epochs the budget measures at 1-6 % of
    the learning rate."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update({"initial_weights": initial_weights, "max_epochs": max_epochs})
    assert parser.get_parsed_content("warmup_epochs") == warmup


def test_whole_grid_recipe_trains_and_segments(tmp_path):
    """configs/train_whole_grid.json (the GPU recipe of a wide network on whole-grid windows) composes with train.json:
    the crop is the whole padded grid, the per-level channels reach the network, and inference.json segments with the
    result on the same windows. Tiny here: 40³ phantoms padded to 48³, channels 6-4-4."""
    data = _data(tmp_path, cases=3, num_val=1)
    models, out = tmp_path / "models", tmp_path / "out"
    grid = ["--roi_size", "[48,48,48]", "--unet_channels", "[6,4,4]"]
    r = _run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
              "['configs/train.json','configs/train_whole_grid.json']", "--dataset_dir", str(data),
              "--ckpt_dir", str(models), "--max_epochs", "1", "--val_interval", "1", "--num_workers", "0", *grid],
              tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "train_loss" in r.stdout + r.stderr and "val_mean_dice" in r.stdout + r.stderr
    wide = UniversalModel(img_size=(48, 48, 48), backbone_kwargs={"channels": [6, 4, 4]})
    wide.load_state_dict(torch.load(models / "model_final.pt", weights_only=True), strict=True)
    case = data / "case_000"
    r = _run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
              "--dataset_dir", str(case / "ct.nii.gz"), "--output_dir", str(out), "--ckpt_path",
              str(models / "model_final.pt"), "--sw_overlap", "0.0", *grid], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "case_000" / "combined_labels.nii.gz").is_file()
    settings = json.loads((out / "case_000" / "report.json").read_text())["settings"]
    assert settings["roi_size"] == [48, 48, 48] and settings["sw_overlap"] == 0.0


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    data = _data(tmp_path, cases=4, num_val=2)
    models = tmp_path / "models"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    r = _run([torchrun, "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m", "monai.bundle", "run",
              "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
              "--dataset_dir", str(data), "--ckpt_dir", str(models), *TINY_TRAIN_ARGS], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    net = _load_tiny(models / "model.pt")  # no "module." prefix: CheckpointSaver unwraps DDP
    assert all(not k.startswith("module.") for k in net.state_dict())


def test_verify_net_in_out_cli(tmp_path):
    """The real `monai.bundle verify_net_in_out` builds network_def of inference.json and checks metadata's shapes."""
    r = _run([sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def",
              "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data shape of network is verified with no error" in r.stdout + r.stderr


def test_metadata_matches_label_space():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == 1
    assert fmt["outputs"]["pred"]["num_channels"] == 32 and fmt["outputs"]["pred"]["channel_def"] == channel_def()
    shipped = torch.load(BUNDLE / "models" / "prompt_embeddings.pt", weights_only=True)
    assert meta["text_encoder"]["encoder"] == shipped["encoder"]


@pytest.mark.parametrize("weights, configs", [
    ("model.pt", ["inference.json"]),
    ("model_whole_grid.pt", ["inference.json", "inference_whole_grid.json"]),
])
def test_shipped_weights_load_without_a_gpu(weights, configs):
    """Each shipped weights file holds CPU tensors: a plain ``torch.load(..., weights_only=True)`` works on any machine
    (weights saved by a GPU run keep their CUDA device unless re-saved) and fits the network of its configs: the
    default, and the whole-grid variant (channels 64-64-64-64-128)."""
    from monai.bundle import ConfigParser

    state = torch.load(BUNDLE / "models" / weights, weights_only=True)
    assert {t.device.type for t in state.values()} == {"cpu"}
    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / c) for c in configs])
    parser.update({"bundle_root": str(BUNDLE)})
    assert Path(parser.get_parsed_content("ckpt_path")).name == weights
    parser.get_parsed_content("network_def").load_state_dict(state, strict=True)
