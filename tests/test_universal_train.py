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


def test_metadata_matches_label_space():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == 1
    assert fmt["outputs"]["pred"]["num_channels"] == 32 and fmt["outputs"]["pred"]["channel_def"] == channel_def()
    shipped = torch.load(BUNDLE / "models" / "prompt_embeddings.pt", weights_only=True)
    assert meta["text_encoder"]["encoder"] == shipped["encoder"]
