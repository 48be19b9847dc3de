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

__all__ = ["WeightsError", "clip_download_hint", "dgseg_home", "download_hint", "local_weights_file", "mismatch_report",
           "read_state_dict", "resolve_weights"]


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a flat or nested dict of tensors from safetensors, a ``.pth``/``.pt``/``.bin`` or TorchScript file."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"weights file {path}: is a folder; expected a weights file (.safetensors, .pth, .pt "
                           "or .bin)")
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if is_safetensors(path):
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


def is_safetensors(path: Path) -> bool:
    """A safetensors file, named so or not (a download saved under the config's ``.pt`` name, ``text-embed --out
    emb.pt``): its suffix, else its content: an 8-byte little-endian header length, then the JSON header."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


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


def clip_download_hint(arch: str | None) -> str:
    """Which file to fetch for the CLIP text tower of open_clip's model ``arch`` (``model.text.arch``), from
    open_clip's pretrained configs (no network access); a general pointer without ``arch``."""
    generic = ("download a CLIP checkpoint with its text tower (e.g. OpenAI's ViT-L-14.pt, or an open_clip or "
               "EVA-CLIP file)")
    if not arch:
        return generic
    try:
        import open_clip
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME

        tag = open_clip.list_pretrained_tags_by_model(arch)[0]  # its first: OpenAI's where there is one
        cfg = open_clip.get_pretrained_cfg(arch, tag)
    except Exception:
        return generic
    parts = []
    if cfg.get("hf_hub"):
        parts.append(f"'{HF_SAFE_WEIGHTS_NAME}' from the Hugging Face repo {cfg['hf_hub'].rstrip('/')} "
                     f"(open_clip's {arch}, {tag})")
    if cfg.get("url"):
        parts.append(f"the original file {cfg['url']}")
    gelu = (" (the Hugging Face file does not say which activation its towers use: set model.text.activation: "
            "quick_gelu for it)" if cfg.get("quick_gelu") and cfg.get("hf_hub") else "")
    return "download " + " or ".join(parts) + gelu if parts else generic


def local_weights_file(spec: str, key: str, hint: str, note: str = "") -> Path:
    """``spec``, the value of the config key (or command-line option, ``--...``) ``key``, as an existing local
    file; a folder or a missing file is an error naming ``key`` and saying which file to fetch (``hint``, e.g.
    :func:`download_hint`)."""
    path = Path(os.path.expanduser(spec))
    if path.is_file():
        return path
    if path.is_dir():
        raise WeightsError(f"{key}: {spec} is a folder; expected the weights file itself (e.g. "
                           f"{path}/model.safetensors)")
    elsewhere = f"pass its path with {key}" if key.startswith("--") else f"set {key} to its path"
    raise WeightsError(
        f"{key}: file not found: {spec}. dgseg never downloads weights: {hint} on a machine with internet "
        f"access and put it at {path} (or {elsewhere}).{note}"
    )


def resolve_weights(spec: str, model_name: str) -> Path:
    """Turn a ``model.backbone.weights`` entry into an existing local file (embedded names are imported once)."""
    if spec in EMBEDDED:
        return embedded_weights_path(spec)
    return local_weights_file(spec, "model.backbone.weights", download_hint(model_name),
                              f" Embedded weights: {', '.join(EMBEDDED)}.")
