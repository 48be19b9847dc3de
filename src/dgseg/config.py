"""Experiment configuration: a dataclass tree loaded from YAML, with ``--set a.b=c`` overrides.

A YAML file may start with ``_base_: other.yaml`` (or a list of files, paths relative to the
including file); the bases are merged first, the file's own keys override them. Every key is
validated against the dataclasses below: an unknown key names the closest valid ones, a wrong type
names the key and the expected type, an impossible value says what would be right.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key and the expectation."""


@dataclass
class BackboneConfig:
    name: str = "vit_small_patch14_dinov2"
    """timm model name (e.g. vit_large_patch14_dinov2, eva02_large_patch14_clip_224, samvit_huge_patch16)."""
    weights: str | None = None
    """Local weights file, a named embedded weight (dinov2_vits14_imgfocus) or null (random init)."""
    patch_size: int | None = 16
    """Patch size to resample the patch kernel to (null: the model's own)."""
    img_size: int = 512
    """Training crop; the position embedding is resampled to it."""
    out_indices: list[int] | None = None
    """Blocks whose outputs feed the head; null: four evenly spaced ([7, 11, 15, 23] for 24 blocks)."""
    drop_path: float = 0.0
    """Stochastic depth (only used when the backbone trains)."""
    model_kwargs: dict | None = None
    """Extra ``timm.create_model`` architecture arguments (e.g. ``{depth: 2, embed_dim: 64}`` for a tiny test
    model). img_size, patch_size and drop_path have their own keys above."""


@dataclass
class AdapterConfig:
    name: str = "rein"
    """rein | lora | adaptformer | vpt | full | frozen."""
    tokens: int | None = None
    """Rein tokens (default 100) or VPT prompts per block (default 150)."""
    rank: int | None = None
    """Rein token rank (default 16, 0 = full rank) or LoRA rank (default 8)."""
    shared: bool = True
    link: bool = True
    query_dim: int = 256
    scale_init: float = 1e-3
    width: int = 64
    """AdaptFormer bottleneck width."""
    scale: float = 0.1
    """AdaptFormer output scale; LoRA uses alpha / rank with alpha = rank (scale 1)."""
    lr_mult: float = 0.1
    """Learning-rate multiplier of backbone weights when they train (full)."""


@dataclass
class HeadConfig:
    name: str = "mask2former"
    """mask2former | linear."""
    hidden_dim: int = 256
    num_queries: int = 100
    enc_layers: int = 6
    enc_ffn: int = 1024
    dec_layers: int = 9
    dec_ffn: int = 2048
    num_heads: int = 8
    num_points: int = 4
    train_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1


@dataclass
class NeckConfig:
    name: str = "simple"
    """simple: resize the block outputs to strides 4/8/16/32 (Rein); fpn: learnable ViTDet-style simple FPN (VLTSeg)."""


@dataclass
class TextConfig:
    name: str = "none"
    """none | clip: CLIP text guidance (VLTSeg v1, DenseCLIP-style)."""
    weights: str | None = None
    """Local CLIP checkpoint holding the text tower (OpenAI .pt, open_clip or EVA-CLIP file)."""
    embeddings: str | None = None
    """Precomputed class embeddings (dgseg text-embed) instead of a text tower; needs learnable_context: false."""
    arch: str | None = None
    """open_clip model name (e.g. EVA02-L-14) of a randomly initialised tower, used when weights is null."""
    activation: str = "auto"
    """auto | gelu | quick_gelu: the text tower's MLP activation; auto: GELU for EVA-CLIP files, QuickGELU for
    OpenAI's."""
    context_length: int = 8
    """Learnable context vectors before the class name."""
    learnable_context: bool = True
    context_init: str = "denseclip"
    """denseclip: trunc_normal_ (std 1) as DenseCLIP; coop: normal, std 0.02."""
    context_decoder: bool = True
    """DenseCLIP's post-model prompting: the class embeddings attend to the visual context (t + gamma * dt)."""
    decoder_layers: int = 3
    decoder_width: int = 256
    decoder_heads: int = 4
    aux_weight: float = 0.4
    temperature: float = 0.07


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    text: TextConfig = field(default_factory=TextConfig)
    num_classes: int | None = None
    """Number of classes; null: taken from data.classes (a different number is an error)."""


@dataclass
class DatasetSpec:
    name: str = "synthetic-game"
    root: str | None = None
    split: str = "train"
    length: int | None = None
    """Synthetic datasets only: number of scenes."""
    size: list[int] | None = None
    """Synthetic datasets only: [H, W] of the rendered scenes."""
    seed: int = 0
    resize: list[int] | float | None = None
    """Evaluation only: resize the image to [W, H] (or by a factor, e.g. 0.5) before inference; labels stay native."""
    prescale: float | None = None
    """Evaluation only: first shrink image (PIL bicubic) and label (PIL nearest) by this factor, as Rein's
    offline mapillary_resize.py (0.5); the metric is then computed at that label size."""
    mode: str | None = None
    """Evaluation only: whole | slide (null: eval.mode)."""
    label_map: dict[int, int] | None = None
    """folder only: raw label value -> class index (or 255); every value not listed is ignore (255)."""
    reduce_zero_label: bool = False
    """folder only (ADE20K convention): 0 -> 255 (ignore), v -> v - 1."""


@dataclass
class DataConfig:
    classes: str | dict = "cityscapes"
    """cityscapes | synthia16 | synthia13 | a YAML file {names, palette?} (recorded inline once loaded)."""
    train: list[DatasetSpec] = field(default_factory=lambda: [DatasetSpec()])
    val: list[DatasetSpec] = field(default_factory=list)
    source: str | None = None
    """Name of the val entry that is the source domain (for rPD)."""
    mean_over: list[str] | None = None
    """Names of the val entries the mean row averages (Rein's mean_used_keys); null: every target."""
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    scale: list[int] = field(default_factory=lambda: [2048, 512])
    ratio_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    short_edges: list[int] | None = None
    """Rein's RandomChoiceResize: the short edge is one of these (uniformly); scale and ratio_range then unused."""
    max_long_edge: int = 2048
    """With short_edges: the long edge is at most this (ResizeShortestEdge max_size)."""
    keep_ratio: bool = True
    """Training resize: true fits the image into ``scale`` x ratio as (long edge, short edge), keeping its aspect
    ratio (mmseg's RandomResize); false resizes it to exactly ``scale`` = [W, H] x ratio (mmcv's
    ``Resize(scale=(1280, 720))``, keep_ratio=False, as VLTSeg's re-implementation)."""
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    num_workers: int = 2
    on_error: str = "raise"
    """raise | skip: what a corrupt sample does during training (skips are counted and reported)."""


@dataclass
class TrainConfig:
    max_iters: int = 40000
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    """adamw | lamb."""
    power: float = 0.9
    warmup_iters: int = 0
    """Linear warm-up from 1e-6 x lr over these iterations (mmengine LinearLR, end = warmup_iters)."""
    poly_begin: int = 0
    """Iteration where the poly decay starts at factor 1.0 (mmengine PolyLR ``begin``; Rein's Cityscapes recipe: 10000)."""
    grad_clip: float | None = None
    accumulate: int = 1
    amp: str = "none"
    """none | bf16 | fp16 (fp16 on CUDA only)."""
    grad_checkpointing: bool = False
    seed: int = 0
    log_interval: int = 50
    checkpoint_interval: int = 4000
    eval_interval: int = 4000
    keep_last: int = 3
    on_nan: str = "stop"
    """stop | skip: what a non-finite loss or gradient does."""
    log_backends: list[str] = field(default_factory=lambda: ["jsonl"])
    """Where training logs go: jsonl (log.jsonl, always) and optionally tensorboard (tb/ in the run folder)."""


@dataclass
class TTAConfig:
    """Test-time augmentation as mmseg's ``SegTTAModel``: class probabilities averaged over scales x flips."""

    enabled: bool = False
    scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0, 1.25, 1.5, 1.75])
    """Resize factors of the eval input (mmseg's Cityscapes TTA ratios)."""
    flip: bool = True
    """Also each scale mirrored left-right."""


@dataclass
class EvalConfig:
    mode: str = "slide"
    crop: int = 512
    stride: int = 341
    batch_size: int | None = None
    """Sliding windows per forward pass; null: by device (1 on a CPU, 4 on a GPU; models/segmentor.py)."""
    miou_subsets: list[str] = field(default_factory=list)
    """Extra mIoU columns over class subsets, e.g. [synthia16, synthia13] (presets or classes files)."""
    examples: int = 4
    """Predictions kept per domain (examples/ in the run folder) for `dgseg report` pages; 0 keeps none."""
    tta: TTAConfig = field(default_factory=TTAConfig)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str = "experiment"


LOG_BACKENDS = ("jsonl", "tensorboard")
CHOICES = {
    "model.adapter.name": ("rein", "lora", "adaptformer", "vpt", "full", "frozen"),
    "model.head.name": ("mask2former", "linear"),
    "model.neck.name": ("simple", "fpn"),
    "model.text.name": ("none", "clip"),
    "model.text.activation": ("auto", "gelu", "quick_gelu"),
    "model.text.context_init": ("denseclip", "coop"),
    "data.on_error": ("raise", "skip"),
    "train.optimizer": ("adamw", "lamb"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.on_nan": ("stop", "skip"),
    "eval.mode": ("whole", "slide"),
}


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    """How an error message names an annotation: 'an integer', 'a list of integers or null', ..."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"a list of {_type_name(item).split(' ', 1)[-1]}s"
    if tp is dict or origin is dict or _is_dataclass_type(tp):
        return "a mapping"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp) or getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# PyYAML follows YAML 1.1, where a float needs a dot: "2e-4" or "1e5" stay strings. Numeric fields accept
# them (YAML 1.2 reads them as numbers); string fields are untouched.
_NUMBER = re.compile(r"^[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?$")


def _as_number(value: Any) -> Any:
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value.strip().replace("_", ""))
    return value


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (dicts become dataclasses)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1 and not errors[0].startswith(f"{key}:"):
            raise ConfigError(errors[0])  # the problem is deeper (a list item, a nested key): name that
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        if origin is dict:
            key_tp, val_tp = typing.get_args(tp)
            return {_convert(k, key_tp, f"{key} key"): _convert(v, val_tp, f"{key}.{k}") for k, v in value.items()}
        return {str(k): v for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp in (int, float):
        value = _as_number(value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join((prefix + '.' if prefix else '') + c for c in close)}?" if close else ""
            raise ConfigError(f"unknown config key '{key}'.{hint} Valid keys here: {', '.join(names)}")
        kwargs[k] = _convert(v, hints[k], key)
    return cls(**kwargs)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular _base_ include ({' -> '.join(str(p) for p in seen)})")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    merged: dict = {}
    for base in bases:
        merged = _deep_merge(merged, _read_yaml(path.parent / base, seen + (path,)))
    return _deep_merge(merged, data)


def _apply_override(data: dict, override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override '{override}': expected key=value, e.g. train.lr=1e-4")
    key, raw = override.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{override}': value is not valid YAML: {exc}") from exc
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override '{override}': '{part}' is not a section")
        node = nxt
    node[parts[-1]] = value


def _validate(cfg: Config) -> None:
    unknown = [b for b in cfg.train.log_backends if b not in LOG_BACKENDS]
    if unknown or "jsonl" not in cfg.train.log_backends:
        raise ConfigError(f"train.log_backends: expected a list of {', '.join(LOG_BACKENDS)} that includes jsonl "
                          f"(curves, resume and reports read log.jsonl), got {cfg.train.log_backends}")
    if cfg.eval.examples < 0:
        raise ConfigError(f"eval.examples: must be >= 0, got {cfg.eval.examples}")
    flat = {
        "model.adapter.name": cfg.model.adapter.name,
        "model.head.name": cfg.model.head.name,
        "model.neck.name": cfg.model.neck.name,
        "model.text.name": cfg.model.text.name,
        "model.text.activation": cfg.model.text.activation,
        "model.text.context_init": cfg.model.text.context_init,
        "data.on_error": cfg.data.on_error,
        "train.optimizer": cfg.train.optimizer,
        "train.amp": cfg.train.amp,
        "train.on_nan": cfg.train.on_nan,
        "eval.mode": cfg.eval.mode,
    }
    for key, value in flat.items():
        if value not in CHOICES[key]:
            raise ConfigError(f"{key}: '{value}' is not one of {', '.join(CHOICES[key])}")
    positive = {
        "train.max_iters": cfg.train.max_iters,
        "train.batch_size": cfg.train.batch_size,
        "train.accumulate": cfg.train.accumulate,
        "train.log_interval": cfg.train.log_interval,
        "train.checkpoint_interval": cfg.train.checkpoint_interval,
        "train.eval_interval": cfg.train.eval_interval,
        "train.keep_last": cfg.train.keep_last,
        "eval.crop": cfg.eval.crop,
        "eval.stride": cfg.eval.stride,
        "eval.batch_size": 1 if cfg.eval.batch_size is None else cfg.eval.batch_size,  # null: by device
        "model.num_classes": 1 if cfg.model.num_classes is None else cfg.model.num_classes,
        "model.backbone.img_size": cfg.model.backbone.img_size,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be > 0, got {value}")
    if cfg.train.lr <= 0:
        raise ConfigError(f"train.lr: must be > 0, got {cfg.train.lr}")
    if cfg.train.weight_decay < 0:
        raise ConfigError(f"train.weight_decay: must be >= 0, got {cfg.train.weight_decay}")
    if cfg.train.warmup_iters < 0 or cfg.train.warmup_iters >= cfg.train.max_iters:
        raise ConfigError(
            f"train.warmup_iters: must be in [0, train.max_iters={cfg.train.max_iters}), got {cfg.train.warmup_iters}"
        )
    if not 0 <= cfg.train.poly_begin < cfg.train.max_iters:
        raise ConfigError(
            f"train.poly_begin: must be in [0, train.max_iters={cfg.train.max_iters}), got {cfg.train.poly_begin}"
        )
    if cfg.train.grad_clip is not None and cfg.train.grad_clip <= 0:
        raise ConfigError(f"train.grad_clip: must be > 0 or null, got {cfg.train.grad_clip}")
    if len(cfg.data.crop_size) != 2 or min(cfg.data.crop_size) <= 0:
        raise ConfigError(f"data.crop_size: expected [H, W] > 0, got {cfg.data.crop_size}")
    if len(cfg.data.scale) != 2 or len(cfg.data.ratio_range) != 2:
        raise ConfigError("data.scale and data.ratio_range: expected two numbers each")
    lo, hi = cfg.data.ratio_range
    if not 0 < lo <= hi:
        raise ConfigError(f"data.ratio_range: expected 0 < low <= high, got {cfg.data.ratio_range}")
    if cfg.data.short_edges is not None:
        if not cfg.data.short_edges or min(cfg.data.short_edges) <= 0 or cfg.data.max_long_edge <= 0:
            raise ConfigError(f"data.short_edges / data.max_long_edge: expected positive sizes, got "
                              f"{cfg.data.short_edges} / {cfg.data.max_long_edge}")
    elif min(cfg.data.crop_size) > min(cfg.data.scale) * hi:
        raise ConfigError(
            f"data.crop_size {cfg.data.crop_size} is larger than the largest resize "
            f"(data.scale {cfg.data.scale} x ratio {hi}): every crop would be padding"
        )
    if not 0 < cfg.data.cat_max_ratio <= 1:
        raise ConfigError(f"data.cat_max_ratio: expected (0, 1], got {cfg.data.cat_max_ratio}")
    if cfg.data.num_workers < 0:
        raise ConfigError(f"data.num_workers: must be >= 0, got {cfg.data.num_workers}")
    if cfg.eval.stride > cfg.eval.crop:
        raise ConfigError(f"eval.stride ({cfg.eval.stride}) must not exceed eval.crop ({cfg.eval.crop})")
    if not cfg.eval.tta.scales or min(cfg.eval.tta.scales) <= 0:
        raise ConfigError(f"eval.tta.scales: expected a non-empty list of factors > 0, got {cfg.eval.tta.scales}")
    for i, spec in enumerate(cfg.data.val):
        if spec.prescale is not None and not 0 < spec.prescale <= 1:
            raise ConfigError(f"data.val[{i}].prescale: expected a factor in (0, 1], got {spec.prescale}")
        if spec.mode is not None and spec.mode not in CHOICES["eval.mode"]:
            raise ConfigError(f"data.val[{i}].mode: '{spec.mode}' is not one of whole, slide")
    names = [s.name for s in cfg.data.val]
    if cfg.data.source is not None and cfg.data.source not in names:
        raise ConfigError(f"data.source: '{cfg.data.source}' is not one of the data.val names {names}")
    labels = names + [f"{s.name}:{s.split}" for s in cfg.data.val]
    bad = [m for m in cfg.data.mean_over or [] if m not in labels]
    if bad or cfg.data.mean_over == []:
        raise ConfigError(f"data.mean_over: {bad or '[]'} must name data.val entries, one of {names}")
    b = cfg.model.backbone
    if b.patch_size is not None and b.patch_size <= 0:
        raise ConfigError(f"model.backbone.patch_size: must be > 0 or null, got {b.patch_size}")
    t = cfg.model.text
    for key in ("decoder_layers", "decoder_width", "decoder_heads"):
        if getattr(t, key) <= 0:
            raise ConfigError(f"model.text.{key}: must be > 0, got {getattr(t, key)}")
    if t.decoder_width % t.decoder_heads:
        raise ConfigError(f"model.text.decoder_width ({t.decoder_width}) must be divisible by "
                          f"model.text.decoder_heads ({t.decoder_heads})")
    a = cfg.model.adapter
    for key in ("tokens", "rank"):
        v = getattr(a, key)
        if v is not None and v < 0:
            raise ConfigError(f"model.adapter.{key}: must be >= 0, got {v}")
    from dgseg.data.classes import ClassSetError, resolve_config_classes

    try:
        resolve_config_classes(cfg)  # model.num_classes from data.classes; label maps checked
    except ClassSetError as e:
        raise ConfigError(str(e)) from None


def config_from_dict(data: dict) -> Config:
    """Build and validate a :class:`Config` from a plain nested dict."""
    cfg = _build(Config, data)
    _validate(cfg)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML experiment (with ``_base_`` includes) and apply ``key=value`` overrides.

    ``path=None`` starts from the defaults.
    """
    data = _read_yaml(Path(path)) if path is not None else {}
    for override in overrides or []:
        _apply_override(data, override)
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
