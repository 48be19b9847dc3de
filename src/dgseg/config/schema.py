"""The experiment config schema: the dataclass tree whose fields and docstrings document every YAML key,
the allowed values of the name-like keys (:data:`CHOICES`) and :class:`ConfigError`.

Reading YAML into these dataclasses is :mod:`dgseg.config.loading`; the checks across keys are
:mod:`dgseg.config.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
    attn_norm: bool = True
    """EVA's sub-LN on the attention output before its projection (timm ``blocks.*.attn.norm``, EVA-CLIP's
    ``inner_attn_ln``). false: removed (identity) and its weights in the file not loaded, as VLTSeg's
    re-implementation has none; a backbone without it is refused."""
    final_norm: bool = True
    """The encoder's final norm (timm ``norm``), which only CLIP text guidance reads (the block outputs fed to
    the neck are taken before it). false: removed and its weights in the file not loaded, as VLTSeg's
    re-implementation has none; refused with text guidance or on a backbone without one."""
    pos_embed_init: str = "file"
    """file: the absolute position embedding of the weights file, resampled to img_size's grid; trunc_normal:
    drawn again (std 0.02) after loading, as VLTSeg's re-implementation ends with it (mmengine skips the file's
    16 x 16 embedding for its 36 x 36 one: a shape mismatch, under strict=False)."""
    pos_embed_resample: str = "bicubic"
    """How the weights file's position grid is resized to img_size's grid when loaded: bicubic (DINOv2's and
    Rein's conversion scripts) or bilinear (Rein's CLIP backbone, DenseCLIP's ``CLIPVisionTransformer``); no
    antialiasing either way."""
    class_embedding_twice: bool = False
    """DenseCLIP's ``CLIPVisionTransformer`` (Rein's ``rein/models/backbones/clip.py``) adds the class embedding
    to the class token twice: as the token, and again with the token's position. true: the position embedding's
    class entry takes the class embedding once more after loading (the same forward). Needs a class token with a
    position of its own."""
    patch_remainder: str = "pad"
    """An image side that is no multiple of the patch size. pad: zero-padded to the next multiple, the scores
    cropped back. drop: its last pixels left out of the encoder (what a stride-p patch convolution does) and the
    predictions stretched over the whole image (mmseg resizes them to the input): VLTSeg's re-implementation
    sees a 512 crop as 36 x 36 patches of 14 px, the last 8 pixels unseen."""
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
    norm: str = "layer"
    """fpn only: the norm between the stride-4 level's two deconvolutions. layer: LayerNorm2d; batch: BatchNorm2d,
    a SyncBatchNorm when DDP runs on GPUs (VLTSeg's re-implementation, fpn1)."""


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
    label: str | None = None
    """Evaluation only: the entry's row in the results (null: its name, plus ``:split`` when the name repeats);
    e.g. two ``folder`` datasets of one split side by side. data.source and data.mean_over may use it."""
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
    split_file: str | None = None
    """A text file listing the images of ``split`` to use (one per line, stem or file name), e.g. 1/16 of
    Cityscapes train; for GTAV, SYNTHIA and UrbanSyn the way to name a split other than train. A relative path
    is read from the folder dgseg runs in, as ``root`` is (not from ``root``)."""

    @property
    def generated(self) -> bool:
        """A ``synthetic-<style>`` entry (any case, as :func:`dgseg.data.build_dataset` reads the name): scenes
        drawn from ``length``, ``size`` and ``seed``, no files."""
        return self.name.lower().startswith("synthetic-")


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
    """Rein's RandomChoiceResize: the short edge is one of these (uniformly); scale, ratio_range and keep_ratio
    then unused (a new run refuses them set away from their defaults: validate.refuse_unused_resize_keys)."""
    max_long_edge: int = 2048
    """With short_edges: the long edge is at most this (ResizeShortestEdge max_size); unused without."""
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
    unknown_labels: str = "auto"
    """auto | error | ignore: a label value a dataset does not define (for a ``folder``: beyond the class count,
    other than 255) is an error naming the file, or (ignore) read as 255, each such file counted and logged.
    auto: error for ``folder`` datasets, ignore for the built-in ones (as Rein's offline label converters,
    which map every raw ID outside their table to 255)."""


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
    no_decay_keys: list[str] | None = None
    """Parameter-name parts that get no weight decay (every normalisation layer gets none, by type); null:
    dgseg's list (engine/optim.py NO_DECAY_KEYS: Rein's keys plus position embeddings, cls/register tokens,
    prompts, query_feat). full_dinov2_l_gta: the official full fine-tuning config's [norm, query_embed,
    level_embed]."""
    custom_keys: dict[str, dict[str, float]] | None = None
    """mmengine's ``paramwise_cfg.custom_keys``, same meaning: {parameter-name part: {lr_mult, decay_mult}}
    (each 1.0 when left out, >= 0; a ``*`` in a key stands for any run of characters). The longest key found
    in a parameter's full name (keys of one length: alphabetical order) gives it lr x lr_mult and
    weight_decay x decay_mult and decides alone:
    the norm-type rule, no_decay_keys and model.adapter.lr_mult apply only to parameters no key matches.
    null: none. VLTSeg's recipes (_base_/vltseg_eva02_clip_l.yaml): the re-implementation's schedule_5k.py."""
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
    crop: int | list[int] = 512
    """Sliding window: one size for both axes or [H, W] (mmseg's test_cfg crop_size)."""
    stride: int | list[int] = 341
    """Window step: one size or [H, W]; at most the window on each axis."""
    batch_size: int | None = None
    """Sliding windows per forward pass; null: by device (1 on a CPU, 4 on a GPU; models/segmentor.py)."""
    miou_subsets: list[str] = field(default_factory=list)
    """Extra mIoU columns over class subsets, e.g. [synthia16, synthia13] (presets or classes files)."""
    examples: int = 4
    """Predictions kept per domain (examples/ in the run folder) for `dgseg report` pages; 0 keeps none."""
    tta: TTAConfig = field(default_factory=TTAConfig)


def hw_pair(value: int | list[int]) -> tuple[int, int]:
    """A size written as one int for both axes or as [H, W] (``eval.crop``, ``eval.stride``) -> (H, W)."""
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f"expected one size or [H, W], got {value}")
    return int(value[0]), int(value[1])


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
    "model.neck.norm": ("layer", "batch"),
    "model.backbone.pos_embed_init": ("file", "trunc_normal"),
    "model.backbone.patch_remainder": ("pad", "drop"),
    "model.backbone.pos_embed_resample": ("bicubic", "bilinear"),
    "model.text.name": ("none", "clip"),
    "model.text.activation": ("auto", "gelu", "quick_gelu"),
    "model.text.context_init": ("denseclip", "coop"),
    "data.on_error": ("raise", "skip"),
    "data.unknown_labels": ("auto", "error", "ignore"),
    "train.optimizer": ("adamw", "lamb"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.on_nan": ("stop", "skip"),
    "eval.mode": ("whole", "slide"),
}
