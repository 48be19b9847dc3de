"""Frozen (or trainable) timm ViTs with adapter hooks, loaded from local weight files only.

Any timm plain ViT works: ``VisionTransformer`` (DINOv2 with/without registers, CLIP, MAE), ``Eva``
(EVA02, EVA02-CLIP, DINOv3) and ``VisionTransformerSAM``. The adapter sees every block through
forward hooks, so timm's own ``forward_intermediates`` runs the blocks (wrap, don't vendor) and the
state dict keeps timm's key names.
"""

from __future__ import annotations

import inspect
import math
import sys
import warnings
from functools import partial
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgseg.config import BackboneConfig
from dgseg.models.backbone_variants import add_class_embedding_twice, init_pos_embed, remove_norms
from dgseg.models.dinov2_pos import is_dinov2, use_dinov2_pos_embed
from dgseg.models.weights_io import (
    WeightsError,
    is_openai_clip,
    mismatch_report,
    read_state_dict,
    resolve_weights,
)


class BackboneWeightsError(WeightsError):
    """A weights file does not fit the chosen architecture."""


def default_out_indices(depth: int) -> list[int]:
    """Four evenly spaced blocks ending at the last: [7, 11, 15, 23] for 24 blocks, [3, 5, 7, 11] for 12."""
    return [round(depth * k / 12) - 1 for k in (4, 6, 8, 12)]


def _unwrap(state_dict: dict) -> dict:
    for key in ("model", "state_dict", "module"):
        inner = state_dict.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
            state_dict = inner
    return {k: v for k, v in state_dict.items() if isinstance(v, Tensor)}


def _resample_leftovers(state_dict: dict, model: nn.Module, mode: str = "bicubic") -> dict:
    """Resize what timm's filters leave at the pretraining resolution (SAM's NHWC pos_embed, rel_pos)."""
    own = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        target = own.get(k)
        if target is not None and target.shape != v.shape:
            if k.endswith(("rel_pos_h", "rel_pos_w")) and v.ndim == 2:
                v = F.interpolate(v.T[None].float(), size=target.shape[0], mode="linear")[0].T.to(v.dtype)
            elif k == "pos_embed" and v.ndim == 4 and v.shape[-1] == target.shape[-1]:
                v = F.interpolate(v.permute(0, 3, 1, 2).float(), size=target.shape[1:3], mode=mode,
                                  align_corners=False).permute(0, 2, 3, 1).to(v.dtype)
        out[k] = v
    return out


# where the raw files keep the patch kernel (timm / DINOv2 / EVA / MAE layout, OpenAI CLIP)
_RAW_PATCH_KERNEL_KEYS = ("patch_embed.proj.weight", "visual.conv1.weight", "module.visual.conv1.weight")


def resize_patch_kernel(kernel: Tensor, size: tuple[int, int]) -> Tensor:
    """Rein's patch-kernel conversion (``tools/convert_models/convert_dinov2_large_512x512.py`` and
    ``..._1024x1024.py``; EVA02's p14to16 files
    were made the same way): bicubic interpolation of the [O, I, k, k] kernel itself, float32,
    align_corners=False, no antialiasing. (timm's ``resample_patch_embed``, a pseudo-inverse resize, is a
    different function: the official Rein checkpoints were trained on this one.)"""
    return F.interpolate(kernel.float(), size=tuple(size), mode="bicubic", align_corners=False)


def _raw_patch_kernel(state_dict: dict) -> Tensor | None:
    for key in _RAW_PATCH_KERNEL_KEYS:
        v = state_dict.get(key)
        if isinstance(v, Tensor) and v.ndim == 4:
            return v
    return None


def _quick_gelu_mismatch(model: nn.Module, state_dict: dict, path: Path, name: str) -> None:
    """Refuses OpenAI's CLIP release (:func:`~dgseg.models.weights_io.is_openai_clip`, with a ``visual.`` tower)
    for a model whose MLPs are not QuickGELU: OpenAI trained with QuickGELU, and timm's ``vit_*_clip_224`` use
    GELU (its ``*_clip_quickgelu_*`` twins match)."""
    if not is_openai_clip(state_dict) or not any(k.startswith("visual.") for k in state_dict):
        return
    act = getattr(getattr(getattr(model, "blocks", [None])[0], "mlp", None), "act", None)
    if act is None or type(act).__name__ == "QuickGELU":
        return
    twin = name.split(".")[0].replace("_clip_", "_clip_quickgelu_")
    fix = (f"use model.backbone.name: {twin}" if twin in timm.list_models(twin)
           else "set model.backbone.model_kwargs: {act_layer: quick_gelu}")
    raise BackboneWeightsError(f"{path}: OpenAI's CLIP release (its 'input_resolution' entry), trained with QuickGELU; "
                               f"'{name}' computes {type(act).__name__} in its MLPs: {fix}")


def load_vit_weights(model: nn.Module, path: Path, name: str, keep_head: bool = False,
                     removed: list[str] | tuple[str, ...] = (), pos_resample: str = "bicubic") -> None:
    """Load a local checkpoint into a timm ViT, through the model family's own timm filter.

    Accepts timm/Hugging Face safetensors, official DINOv2 ``*_pretrain.pth``, OpenAI CLIP ``.pt``
    (TorchScript), official EVA02 checkpoints, SAM ``sam_vit_*.pth`` (its ``image_encoder.*`` part)
    and MAE ``mae_pretrain_vit_*.pth``. A patch kernel of another size is resized with
    :func:`resize_patch_kernel`; the position grid without antialiasing, bicubically (both as Rein's
    conversion script does) unless ``pos_resample`` says bilinear (``model.backbone.pos_embed_resample``).
    ``keep_head``: the file must also hold the head (a CLIP encoder's visual
    projection), which is loaded instead of being dropped. ``removed``: modules the config replaced with an
    identity (:func:`dgseg.models.backbone_variants.remove_norms`); their weights in the file are dropped, not refused.
    """
    state_dict = _unwrap(read_state_dict(path))
    _quick_gelu_mismatch(model, state_dict, path, name)
    raw_kernel = _raw_patch_kernel(state_dict)
    module = sys.modules[type(model).__module__]
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # no antialiasing, as DINOv2 / Rein interpolate position embeddings (bicubic unless the config says)
            accepted = inspect.signature(filter_fn).parameters
            kwargs = {k: v for k, v in (("antialias", False), ("interpolation", pos_resample)) if k in accepted}
            try:
                state_dict = filter_fn(state_dict, model, **kwargs)
            except Exception as exc:  # timm filters assume their own layouts
                raise BackboneWeightsError(
                    f"{path}: timm could not convert this file for '{name}' ({type(exc).__name__}: {exc}); "
                    "is it a checkpoint of this architecture?"
                ) from exc
    own_kernel = getattr(getattr(getattr(model, "patch_embed", None), "proj", None), "weight", None)
    if (raw_kernel is not None and own_kernel is not None and "patch_embed.proj.weight" in state_dict
            and raw_kernel.shape[:2] == own_kernel.shape[:2] and raw_kernel.shape[-2:] != own_kernel.shape[-2:]):
        state_dict["patch_embed.proj.weight"] = resize_patch_kernel(raw_kernel, own_kernel.shape[-2:])
    state_dict = _resample_leftovers(state_dict, model, pos_resample)
    own = model.state_dict()
    ignorable = ("head.", "fc_norm.", "neck.", "mask_token", "lm_head.")
    if keep_head:
        ignorable = tuple(p for p in ignorable if p != "head.")
    gone = tuple(f"{m}." for m in removed)
    state_dict = {k: v for k, v in state_dict.items() if k in own or not k.startswith(ignorable + gone)}
    problems = mismatch_report(own, state_dict, [k for k in own if not k.startswith(ignorable)])
    if problems:
        raise BackboneWeightsError(f"{path} does not fit the architecture '{name}': {problems}")
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)


class Backbone(nn.Module):
    """A timm ViT returning the patch features of chosen blocks as maps.

    ``forward(images [B,3,H,W]) -> list of [B, C, H/p, W/p]`` (prefix tokens removed). An adapter
    (Rein, VPT, ...) set with :meth:`attach_adapter` is called before/after each block it asks for.
    """

    def __init__(self, vit: nn.Module, name: str, out_indices: list[int], patch_size: int,
                 patch_remainder: str = "pad"):
        super().__init__()
        self.patch_remainder = patch_remainder  # model.backbone.patch_remainder: see fit_to_patches
        head = getattr(vit, "head", None)
        # a CLIP image encoder's final norm + visual projection (timm keeps it as norm + head)
        self.embed_out = head.out_features if isinstance(head, nn.Linear) else None
        self.vit = vit
        self.name = name
        self.out_indices = list(out_indices)
        self.patch_size = patch_size
        self.embed_dim = vit.embed_dim
        self.depth = len(vit.blocks)
        self.num_prefix_tokens = int(getattr(vit, "num_prefix_tokens", 0) or 0)
        self.channels_last_blocks = type(vit).__name__ == "VisionTransformerSAM"
        self.adapter: nn.Module | None = None
        self._hooks: list = []

    @property
    def global_attention_blocks(self) -> list[int]:
        """Blocks with global attention (all of them, except SAM's windowed blocks)."""
        return [i for i, b in enumerate(self.vit.blocks) if getattr(b, "window_size", 0) == 0]

    def attach_adapter(self, adapter: nn.Module) -> None:
        """Install ``adapter.before_block`` / ``adapter.after_block`` as hooks on ``adapter.layers``."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        # Keep the adapter out of this module's children: it is owned (and counted) by the Segmentor.
        object.__setattr__(self, "adapter", adapter)
        for i in adapter.layers:
            blk = self.vit.blocks[i]
            self._hooks.append(blk.register_forward_pre_hook(partial(self._pre_hook, i)))
            self._hooks.append(blk.register_forward_hook(partial(self._post_hook, i)))

    def _as_tokens(self, x: Tensor) -> tuple[Tensor, tuple | None]:
        if self.channels_last_blocks:  # SAM blocks are B x H x W x C
            b, h, w, c = x.shape
            return x.reshape(b, h * w, c), (h, w)
        return x, None

    def _from_tokens(self, x: Tensor, hw: tuple | None) -> Tensor:
        return x if hw is None else x.reshape(x.shape[0], hw[0], hw[1], x.shape[-1])

    def _pre_hook(self, layer: int, module: nn.Module, args: tuple):
        x, hw = self._as_tokens(args[0])
        y = self.adapter.before_block(x, layer, self.num_prefix_tokens)
        if y is x:
            return None
        return (self._from_tokens(y, hw),) + tuple(args[1:])

    def _post_hook(self, layer: int, module: nn.Module, args: tuple, output: Tensor):
        x, hw = self._as_tokens(output)
        y = self.adapter.after_block(x, layer, self.num_prefix_tokens)
        return None if y is x else self._from_tokens(y, hw)

    def forward(self, images: Tensor, embeddings: bool = False):
        """Maps of ``out_indices`` [B, C, H/p, W/p]; with ``embeddings`` also the CLIP embeddings
        (global [B, D], dense [B, D, H/p, W/p]) of :meth:`project`: ``(maps, (global, dense))``."""
        # timm returns one map per distinct block, in block order; give one per out_indices entry, in its
        # order (shallow models repeat blocks: [0, 0, 0, 1] for 2 blocks, and the neck wants four maps)
        blocks = sorted(set(self.out_indices))
        out = self.vit.forward_intermediates(
            images, indices=blocks, norm=False, output_fmt="NCHW", intermediates_only=not embeddings,
            stop_early=not embeddings,
        )
        final, feats = out if embeddings else (None, out)
        by_block = dict(zip(blocks, feats))
        maps = [by_block[i] for i in self.out_indices]
        if not embeddings:
            return maps
        return maps, self.project(final, feats[0].shape[-2:])

    def project(self, tokens: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """The last block's tokens after the final norm [B, P + h*w, C] -> through the visual projection:
        the global embedding (cls token) [B, D] and the dense embeddings [B, D, h, w] (DenseCLIP's
        ``CLIPVisionTransformer`` with ``get_embeddings``: ``ln_post`` then ``@ proj`` on every token)."""
        if self.embed_out is None:
            raise ValueError(f"backbone '{self.name}' has no visual projection (timm head); CLIP text guidance "
                             "needs a CLIP image encoder built with it")
        z = self.vit.head(tokens)
        h, w = grid
        dense = z[:, self.num_prefix_tokens:].reshape(z.shape[0], h, w, -1).permute(0, 3, 1, 2)
        return z[:, 0], dense

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.vit.set_grad_checkpointing(enable)


def projection_dim(name: str, cfg: BackboneConfig) -> int:
    """Width of a CLIP encoder's visual projection: ``model_kwargs.num_classes``, else timm's pretrained config
    of ``name`` (768 for ``eva02_large_patch14_clip_224`` and ``vit_large_patch14_clip_224.openai``)."""
    extra = cfg.model_kwargs or {}
    if "num_classes" in extra:
        return int(extra["num_classes"])
    pretrained = timm.models.get_pretrained_cfg(name)
    dim = getattr(pretrained, "num_classes", 0) or 0
    if dim <= 0:
        raise ValueError(
            f"model.backbone.name: '{name}' has no visual projection (timm num_classes 0); CLIP text guidance "
            "needs a CLIP image encoder such as eva02_large_patch14_clip_224 or vit_large_patch14_clip_224.openai "
            "(or set model.backbone.model_kwargs.num_classes to the projection width)"
        )
    return dim


def _create_kwargs(name: str, cfg: BackboneConfig, projection: bool = False) -> dict:
    num_classes = projection_dim(name, cfg) if projection else 0
    kwargs = dict(pretrained=False, num_classes=num_classes, img_size=cfg.img_size, drop_path_rate=cfg.drop_path)
    if cfg.patch_size is not None:
        kwargs["patch_size"] = cfg.patch_size
    if not name.startswith("samvit"):
        kwargs["dynamic_img_size"] = True
    extra = dict(cfg.model_kwargs or {})
    own_keys = {"img_size": "img_size", "patch_size": "patch_size", "drop_path_rate": "drop_path",
                "pretrained": "weights"}
    clash = sorted(k for k in extra if k in own_keys)
    if clash:
        raise ValueError(
            f"model.backbone.model_kwargs: {clash} have their own keys "
            f"({', '.join('model.backbone.' + own_keys[k] for k in clash)}); set them there"
        )
    kwargs.update(extra)
    return kwargs


SUPPORTED_FAMILIES = (
    "plain ViTs with patch tokens: timm's VisionTransformer (vit_*: DINOv2 with/without registers, OpenAI/LAION "
    "CLIP, MAE), Eva (eva02_*, DINOv3) and VisionTransformerSAM (samvit_*)"
)
VIT_FAMILIES = ("vision_transformer", "eva", "vision_transformer_sam")


def _family(name: str) -> str:
    """The timm module that defines ``name`` (``resnet``, ``vision_transformer``, ...)."""
    try:
        return timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]
    except Exception:
        return "?"


def _not_a_vit(name: str, why: str) -> str:
    family = _family(name)
    return (f"model.backbone.name: '{name}' (timm family '{family}') is not a supported backbone ({why}). dgseg's "
            f"adapters hook the blocks of {SUPPORTED_FAMILIES}; CNNs such as resnet50 or convnext_tiny are not "
            "supported. See `timm.list_models('vit_*')`.")


def build_backbone(cfg: BackboneConfig, projection: bool = False) -> Backbone:
    """Create the timm ViT named ``cfg.name``, load ``cfg.weights`` from a local file, and wrap it.

    Nothing is ever downloaded: a weights entry that is not a local file (nor an embedded name)
    raises an error saying which file to fetch. ``projection``: keep the final norm and the visual
    projection of a CLIP encoder (timm's ``head``), loaded from the same file (CLIP text guidance).
    """
    name = cfg.name
    kwargs = _create_kwargs(name, cfg, projection)  # its own errors name their keys: outside the try below
    try:
        vit = timm.create_model(name, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            import difflib

            close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.6)
            hint = f"similar: {', '.join(close)}" if close else "expected a timm ViT name such as vit_large_patch14_dinov2"
            raise ValueError(f"model.backbone.name: timm has no model '{name}'; {hint}") from exc
        raise
    except TypeError as exc:  # a CNN or another family that takes no img_size / patch_size
        if _family(name) in VIT_FAMILIES:
            raise ValueError(f"model.backbone.model_kwargs: timm's '{name}' does not take one of "
                             f"{sorted(cfg.model_kwargs or {})} ({exc})") from exc
        raise ValueError(_not_a_vit(name, str(exc))) from exc
    except (AssertionError, ArithmeticError, ValueError) as exc:  # timm's own checks, e.g. a width heads don't divide
        raise ValueError(f"model.backbone: timm cannot build '{name}' with img_size {cfg.img_size}, patch_size "
                         f"{cfg.patch_size}, model_kwargs {cfg.model_kwargs} ({type(exc).__name__}: {exc})") from exc
    if not hasattr(vit, "blocks") or not hasattr(vit, "forward_intermediates") or not hasattr(vit, "patch_embed"):
        raise ValueError(_not_a_vit(name, f"it builds a {type(vit).__name__}"))
    patch = _patch_size(vit)
    if cfg.img_size < patch:  # a position grid of 0 x 0 patches: a division by zero when resampled
        raise ValueError(f"model.backbone.img_size: {cfg.img_size} px is less than one {patch}-px patch of '{name}'; "
                         "expected the training crop's size (e.g. 512), at least the patch size")
    removed = remove_norms(vit, cfg)
    if cfg.weights is not None:
        path = resolve_weights(cfg.weights, name)
        load_vit_weights(vit, path, name, keep_head=projection, removed=removed, pos_resample=cfg.pos_embed_resample)
    init_pos_embed(vit, cfg)
    add_class_embedding_twice(vit, cfg)
    if is_dinov2(name) and getattr(vit, "dynamic_img_size", False):
        use_dinov2_pos_embed(vit)  # other grids than the crop's are resampled as DINOv2 / Rein do
    return Backbone(vit, name, resolve_out_indices(vit, cfg.out_indices, name), patch, cfg.patch_remainder)


def resolve_out_indices(vit: nn.Module, out_indices: list[int] | None, name: str) -> list[int]:
    """``model.backbone.out_indices`` checked against ``vit``'s blocks; null: the last four global-attention
    blocks of a SAM encoder, else four evenly spaced blocks (:func:`default_out_indices`)."""
    depth = len(vit.blocks)
    if out_indices is not None:
        bad = [i for i in out_indices if not 0 <= i < depth]
        if bad:
            raise ValueError(f"model.backbone.out_indices: {bad} out of range for {depth} blocks of '{name}'")
        return list(out_indices)
    global_blocks = [i for i, b in enumerate(vit.blocks) if getattr(b, "window_size", 0) == 0]
    if type(vit).__name__ == "VisionTransformerSAM" and len(global_blocks) >= 4:
        return global_blocks[-4:]
    return default_out_indices(depth)


def layout_defaults(name: str, model_kwargs: dict | None) -> tuple[int, list[int]]:
    """What null ``patch_size`` and ``out_indices`` stand for on timm's ``name`` with ``model_kwargs``: (its own
    patch size, the blocks :func:`resolve_out_indices` takes). Built on the meta device: no memory, no weights."""
    with torch.device("meta"):
        vit = timm.create_model(name, pretrained=False, num_classes=0, **dict(model_kwargs or {}))
    return _patch_size(vit), resolve_out_indices(vit, None, name)


def _patch_size(vit: nn.Module) -> int:
    """The side of ``vit``'s square patches (timm stores an int or an (h, w) pair)."""
    patch = vit.patch_embed.patch_size
    return patch[0] if isinstance(patch, (tuple, list)) else int(patch)


def pad_to_multiple(images: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Zero-pad ``images`` [B,3,H,W] on the bottom/right to a multiple of the patch size."""
    h, w = images.shape[-2:]
    ph, pw = (math.ceil(h / multiple) * multiple - h), (math.ceil(w / multiple) * multiple - w)
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph))
    return images, (h, w)


def fit_to_patches(images: Tensor, multiple: int, remainder: str = "pad") -> tuple[Tensor, tuple[int, int]]:
    """``images`` [B,3,H,W] made whole patches, and the original (H, W). ``pad``: :func:`pad_to_multiple`.
    ``drop``: the bottom rows and right columns past the last whole patch cut off (a stride-``multiple``
    convolution never reads them), as VLTSeg's re-implementation's patch embedding does."""
    if remainder == "pad":
        return pad_to_multiple(images, multiple)
    h, w = images.shape[-2:]
    if h < multiple or w < multiple:
        raise ValueError(f"image is {w}x{h} px (WxH): model.backbone.patch_remainder: drop needs at least one "
                         f"whole {multiple}-px patch on each side")
    return images[..., : h // multiple * multiple, : w // multiple * multiple], (h, w)
