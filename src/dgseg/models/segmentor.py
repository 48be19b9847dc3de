"""The Segmentor: backbone + adapter + neck + head, with training loss and whole/sliding-window inference."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgseg.config import Config
from dgseg.config.schema import hw_pair
from dgseg.image_size import image_size_problem, model_size_rule
from dgseg.models.adapters import Adapter, build_adapter
from dgseg.models.backbones import Backbone, build_backbone, fit_to_patches
from dgseg.models.neck import NECKS

TEXT_TOWER_PREFIX = "text.frozen."
"""Where a model's frozen CLIP text tower (a learned prompt's) sits in its state dict: never in a checkpoint."""


class Segmentor(nn.Module):
    """``images`` are float [B, 3, H, W], ImageNet-normalised; ``labels`` int64 [B, H, W] with 255 = ignore."""

    def __init__(self, backbone: Backbone, adapter: Adapter, neck: nn.Module, head: nn.Module,
                 num_classes: int, text: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.adapter = adapter
        self.neck = neck
        self.head = head
        self.text = text
        self.num_classes = num_classes
        self.head_uses_queries = bool(getattr(head, "query_link", False))
        self.backbone.requires_grad_(adapter.trains_backbone)
        self.train(False)

    # ------------------------------------------------------------------ modes and parameters
    def train(self, mode: bool = True) -> Segmentor:
        super().train(mode)
        if not self.adapter.trains_backbone:
            self.backbone.eval()  # frozen: no drop-path / dropout, whatever the mode
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """``train.grad_checkpointing``: the backbone's blocks (timm's per-block checkpoint, the adapter's
        layers inside) and the pixel decoder's encoder layers keep only their inputs for the backward
        pass and run again there."""
        self.backbone.set_grad_checkpointing(enable)
        for module in self.head.modules():
            if hasattr(module, "grad_checkpointing"):
                module.grad_checkpointing = enable

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimizer gets: every parameter with ``requires_grad``."""
        return [p for p in self.parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The weights a checkpoint holds: adapter, neck, head (+ text), and the backbone only when it trains."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        state = self.state_dict()
        keep = {}
        for k, v in state.items():
            if k in names or (not k.startswith("backbone.") and not k.startswith(TEXT_TOWER_PREFIX)):
                keep[k] = v
        return keep

    def parameter_counts(self) -> dict[str, int]:
        def count(module: nn.Module | None, trainable_only: bool = False) -> int:
            if module is None:
                return 0
            return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

        return {
            "backbone": count(self.backbone),
            "adapter": count(self.adapter, trainable_only=True),
            "neck": count(self.neck),
            "head": count(self.head),
            "text": count(self.text, trainable_only=True),
            "context_decoder": (count(self.text.decoder) + self.text.gamma.numel()
                                if self.text is not None and self.text.decoder is not None else 0),
            "trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in self.parameters()),
        }

    # ------------------------------------------------------------------ forward
    def extract(self, images: Tensor) -> list[Tensor]:
        """Pyramid features [B, C_i, H/s, W/s] for s = 4, 8, 16, 32 (``images`` already padded)."""
        return self._features(images)[0]

    def _features(self, images: Tensor) -> tuple[list[Tensor], tuple[Tensor, Tensor] | None]:
        """The pyramid, and with text guidance the encoder's projected CLIP embeddings (global, dense)."""
        grad = self.adapter.backbone_grad and torch.is_grad_enabled()
        with contextlib.nullcontext() if grad else torch.no_grad():
            if self.text is None:
                feats, visual = self.backbone(images), None
            else:
                feats, visual = self.backbone(images, embeddings=True)
        return self.neck(feats), visual

    def forward(self, images: Tensor, labels: Tensor | None = None) -> dict:
        """Named losses when ``labels`` are given (so DDP wraps the training step), else the raw head
        outputs for ``images`` made whole patches (``model.backbone.patch_remainder``: zero-padded, or the
        remainder left out and the predictions read as covering the whole image)."""
        if labels is not None and images.shape[-2:] != labels.shape[-2:]:
            raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} differ in size")
        padded, (h, w) = fit_to_patches(images, self.backbone.patch_size, self.backbone.patch_remainder)
        feats, visual = self._features(padded)
        queries = self.adapter.queries() if self.head_uses_queries else None
        aux = {}
        if self.text is not None:
            feats, aux = self.text(feats, visual)
        outputs = self.head(feats, queries)
        if labels is None:
            return outputs
        if padded.shape[-2] > h or padded.shape[-1] > w:  # padded: so are the labels, with ignore
            labels = F.pad(labels, (0, padded.shape[-1] - w, 0, padded.shape[-2] - h), value=255)
        losses = self.head.loss(outputs, labels)
        if self.text is not None:
            losses.update(self.text.loss(aux, labels))
        return losses

    def loss(self, images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Named losses; the training loop sums every value whose key contains ``loss``."""
        return self(images, labels)

    def _scores(self, images: Tensor) -> Tensor:
        """Class scores [B, K, H, W] for one batch of (unpadded) images."""
        h, w = images.shape[-2:]
        p = self.backbone.patch_size
        outputs = self(images)
        if self.backbone.patch_remainder == "drop":  # the predictions span the whole image
            return self.head.semantic(outputs, (h, w))
        scores = self.head.semantic(outputs, (math.ceil(h / p) * p, math.ceil(w / p) * p))
        return scores[:, :, :h, :w]

    @torch.no_grad()
    def predict(self, images: Tensor, mode: str = "whole", crop: int | Sequence[int] = 512,
                stride: int | Sequence[int] = 341, batch: int | None = None) -> Tensor:
        """Class scores [B, K, H, W]. ``slide``: ``crop`` windows every ``stride`` pixels (one size for both axes
        or [H, W], as mmseg's ``test_cfg``), run ``batch`` windows at a time (None: :func:`default_slide_batch`
        of the images' device), overlaps averaged (mmseg's window placement: the last window of a row ends at
        the border)."""
        batch = default_slide_batch(images.device) if batch is None else batch
        if mode == "whole":
            return self._scores(images).float()
        if mode != "slide":
            raise ValueError(f"predict: mode must be 'whole' or 'slide', got {mode!r}")
        b, _, h, w = images.shape
        ch, cw, boxes = check_slide(self, h, w, b, crop, stride, batch)
        out = images.new_zeros((b, self.num_classes, h, w), dtype=torch.float32)
        count = images.new_zeros((1, 1, h, w), dtype=torch.float32)
        windows = torch.stack([images[:, :, y:y + ch, x:x + cw] for y, x in boxes], dim=1)  # B x W x 3 x ch x cw
        windows = windows.flatten(0, 1)
        per_image = len(boxes)
        for start in range(0, windows.shape[0], batch):
            scores = self._scores(windows[start:start + batch]).float()
            for j in range(scores.shape[0]):
                idx = start + j
                y, x = boxes[idx % per_image]
                out[idx // per_image, :, y:y + ch, x:x + cw] += scores[j]
        for y, x in boxes:
            count[:, :, y:y + ch, x:x + cw] += 1
        return out / count


SLIDE_BATCH = {"cpu": 1}
"""Windows per forward pass by device type when none is given; other devices (GPUs): SLIDE_BATCH_ACCELERATOR.
On a CPU a batch of windows is no faster (no idle units to fill) and costs memory: ViT-S, 1024 x 2048 image,
8 windows: +2.3 GB and 28.4 s vs 27.9 s per image with 1 window (issue 24)."""
SLIDE_BATCH_ACCELERATOR = 4


def default_slide_batch(device: torch.device | str) -> int:
    """Sliding-window batch when ``eval.batch_size`` is null: 1 window on a CPU, 4 on a GPU."""
    return SLIDE_BATCH.get(torch.device(device).type, SLIDE_BATCH_ACCELERATOR)


def sliding_starts(size: int, crop: int, stride: int) -> list[int]:
    """Window starts along one axis: every ``stride``, the last one moved back to end at ``size``."""
    n = max(math.ceil((size - crop) / stride), 0) + 1
    return [min(i * stride, size - crop) for i in range(n)]


def _warn_unused_head_keys(head) -> None:
    """The keys of `model.head` other than `name` are Mask2Former's; a head without them (`linear`) takes
    none, so say which were set to other than their defaults (inherited from a base config, say) rather
    than drop them unsaid."""
    from dataclasses import fields

    from dgseg.config.schema import HeadConfig

    unused = [f"{f.name}={getattr(head, f.name)!r}" for f in fields(HeadConfig)
              if f.name != "name" and getattr(head, f.name) != f.default]
    if unused:
        warnings.warn(f"model.head.name is '{head.name}', which takes none of the Mask2Former keys; these are set "
                      f"but not used: {', '.join(unused)}", stacklevel=3)


def build_model(cfg: Config) -> Segmentor:
    """Wire backbone, adapter, neck and head from ``cfg.model``; weights loaded, on CPU.

    Initialisation is seeded by ``train.seed`` (without touching the global RNG), so the same config
    always builds the same model: a randomly initialised backbone is the same at eval as in training.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        return _build_model(cfg)


def _build_model(cfg: Config) -> Segmentor:
    from dgseg.models.heads import build_head

    m = cfg.model
    if m.text.name != "none" and m.text.weights is not None and m.text.weights == m.backbone.weights:
        from pathlib import Path

        from dgseg.models.weights_io import local_weights_file

        # one CLIP file for both towers: a missing one is named as such, not as timm's image-only file
        local_weights_file(m.text.weights, "model.backbone.weights and model.text.weights",
                           f"download {Path(m.text.weights).name}, the CLIP release holding both the image and the "
                           f"text tower (EVA-CLIP's files: the Hugging Face repo QuanSun/EVA-CLIP)")
    backbone = build_backbone(m.backbone, projection=m.text.name != "none")
    adapter = build_adapter(m.adapter, backbone)
    if m.neck.name not in NECKS:
        raise ValueError(f"model.neck.name: unknown neck '{m.neck.name}'; choose one of {', '.join(NECKS)}")
    neck = NECKS[m.neck.name](backbone.embed_dim, **({"norm": m.neck.norm} if m.neck.name == "fpn" else {}))
    text = None
    in_channels = list(neck.out_channels)
    if m.text.name != "none":
        from dgseg.data.classes import config_class_set
        from dgseg.models.text import build_text_guidance

        text = build_text_guidance(m.text, list(config_class_set(cfg).names))
        if backbone.embed_out != text.embed_dim:
            raise ValueError(
                f"model.text: the class embeddings are {text.embed_dim}-d but the visual projection of "
                f"'{m.backbone.name}' gives {backbone.embed_out}-d embeddings; use the image and text towers of "
                "one CLIP model"
            )
        in_channels = text.head_in_channels(in_channels)
    if m.head.name == "mask2former":
        kwargs = {k: v for k, v in vars(m.head).items() if k != "name"}
        kwargs["query_link"] = bool(adapter.link and adapter.queries() is not None)
        if kwargs["query_link"]:
            kwargs["num_queries"] = adapter.num_tokens
            if adapter.query_dim != m.head.hidden_dim:
                raise ValueError(
                    f"model.adapter.query_dim ({adapter.query_dim}) must equal model.head.hidden_dim "
                    f"({m.head.hidden_dim}) when Rein queries feed the head (link: true)"
                )
    else:
        if adapter.link:
            raise ValueError(
                f"model.adapter.link: true feeds Rein queries to a mask2former head, but model.head.name is "
                f"'{m.head.name}'; set model.adapter.link=false"
            )
        _warn_unused_head_keys(m.head)
        kwargs = {}
    head = build_head(m.head.name, in_channels, m.num_classes, **kwargs)
    return Segmentor(backbone, adapter, neck, head, m.num_classes, text=text)


def slide_windows(h: int, w: int, crop: int | Sequence[int], stride: int | Sequence[int]
                  ) -> tuple[int, int, list[tuple[int, int]]]:
    """The sliding windows of an ``h`` x ``w`` image: their height and width (``crop`` cut to the image) and
    top-left corners, row by row (mmseg's placement: the last window of a row ends at the border)."""
    (crop_h, crop_w), (stride_h, stride_w) = hw_pair(crop), hw_pair(stride)
    if not (0 < stride_h <= crop_h and 0 < stride_w <= crop_w):
        raise ValueError(f"predict: need 0 < stride <= crop on each axis, got stride={stride}, crop={crop}")
    ch, cw = min(crop_h, h), min(crop_w, w)
    return ch, cw, [(y, x) for y in sliding_starts(h, ch, stride_h) for x in sliding_starts(w, cw, stride_w)]


def check_slide(model: nn.Module, h: int, w: int, images: int, crop: int | Sequence[int],
                stride: int | Sequence[int], batch: int) -> tuple[int, int, list[tuple[int, int]]]:
    """:func:`slide_windows` of ``images`` images of ``h`` x ``w``, refused where ``model`` cannot take them
    ``batch`` windows at a time (else an interpolation to 0 x 0 or a GroupNorm of one value deep in the head). A
    GroupNorm of one channel per group fails only on a forward of one window: with at least two windows in every
    forward, the looser rule of a batch applies (as in training)."""
    ch, cw, boxes = slide_windows(h, w, crop, stride)
    rule = model_size_rule(model)
    windows = images * len(boxes)
    fewest = min(windows, windows % batch or batch)  # windows in the smallest forward: the last one's
    problem = None if rule is None else image_size_problem(ch, cw, rule.for_batch(fewest))
    if problem is None:
        return ch, cw, boxes
    if (ch, cw) == hw_pair(crop):
        raise ValueError(f"eval.crop {crop}: the sliding {problem.replace('image is', 'window is', 1)}; set a "
                         "larger eval.crop (or eval.mode: whole)")
    raise ValueError(f"predict: the {problem} (the sliding window is cut to the image)")
