"""Reading weight files safely, and resolving a ``weights:`` entry to a local file.

No pickle from a user's file is ever loaded without ``weights_only=True``; OpenAI's CLIP ``.pt``
files are TorchScript archives and are read by :func:`dgseg.safe_pickle.torchscript_state_dict`, which
rebuilds their tensors without loading the archive (``torch.jit.load`` would run its code).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from dgseg.models.pretrained import EMBEDDED, embedded_weights_path
from dgseg.models.weights_home import WeightsError, dgseg_home
from dgseg.safe_pickle import UnsafePickleError, is_torchscript, torchscript_state_dict

__all__ = ["WeightsError", "dgseg_home", "download_hint", "mismatch_report", "read_state_dict", "resolve_weights"]


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a flat or nested dict of tensors from safetensors, a ``.pth``/``.pt``/``.bin`` or TorchScript file."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"weights file {path}: is a folder; expected a weights file (.safetensors, .pth, .pt "
                           "or .bin)")
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    if is_torchscript(path):
        try:
            return torchscript_state_dict(path)
        except UnsafePickleError as exc:
            raise WeightsError(f"TorchScript archive refused: {exc}") from exc
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{path}: could not be read as plain tensors with torch.load(weights_only=True) ({exc}). "
            "dgseg loads no pickled code; convert the file to safetensors with the tool that made it."
        ) from exc
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
    return data


def is_openai_clip(state: Mapping[str, object]) -> bool:
    """OpenAI's CLIP release, as its ``.pt`` saves it (converted to safetensors or not): the top-level
    ``input_resolution`` entry only OpenAI writes. Its towers were trained with QuickGELU, where EVA-CLIP's and
    open_clip's LAION / DataComp towers use GELU."""
    return "input_resolution" in state


def mismatch_report(own: Mapping[str, Tensor], given: Mapping[str, Tensor], required: Iterable[str]) -> str:
    """'' when ``given`` fits ``own``; else what does not: shape mismatches, ``required`` keys missing from
    ``given``, keys of ``given`` that ``own`` lacks (the first few of each, with counts)."""
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in given.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in required if k not in given]
    unexpected = [k for k in given if k not in own]
    parts = []
    if wrong:
        parts.append(f"{len(wrong)} shape mismatches, e.g. {wrong[:3]}")
    if missing:
        parts.append(f"{len(missing)} model keys missing from the file, e.g. {missing[:5]}")
    if unexpected:
        parts.append(f"{len(unexpected)} file keys the model does not have, e.g. {unexpected[:5]}")
    return "; ".join(parts)


def download_hint(name: str) -> str:
    """Which file to fetch for a timm model name, from timm's pretrained config (no network access)."""
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
    except Exception:
        cfg = None
    if cfg is None:
        return "download the model's pretrained weights file"
    hub = cfg.hf_hub_id
    url = cfg.url
    parts = []
    if hub:
        parts.append(f"'model.safetensors' from the Hugging Face repo {hub}")
    if url:
        parts.append(f"the original file {url}")
    return "download " + " or ".join(parts) if parts else "download the model's pretrained weights file"


def resolve_weights(spec: str, model_name: str) -> Path:
    """Turn a ``weights:`` entry into an existing local file (embedded names are imported once)."""
    if spec in EMBEDDED:
        return embedded_weights_path(spec)
    path = Path(os.path.expanduser(spec))
    if path.is_file():
        return path
    if path.is_dir():
        raise WeightsError(f"model.backbone.weights: {spec} is a folder; expected the weights file itself (e.g. "
                           f"{path}/model.safetensors)")
    raise WeightsError(
        f"model.backbone.weights: file not found: {spec}. dgseg never downloads weights: "
        f"{download_hint(model_name)} on a machine with internet access and put it at {path} "
        f"(or set model.backbone.weights to its path). Embedded weights: {', '.join(EMBEDDED)}."
    )
