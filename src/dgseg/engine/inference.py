"""Models from checkpoints; prediction of image files to label PNGs; export to a full file or ONNX."""

from __future__ import annotations

import contextlib
import functools
import importlib
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dgseg.config import Config, config_to_dict, load_config
from dgseg.engine.backbone_check import check_backbone
from dgseg.engine.checkpoint import CheckpointError, check_compatible, load_checkpoint
from dgseg.engine.checkpoint_compat import check_backbone_layout
from dgseg.engine.checkpoint_read import read_meta
from dgseg.engine.classes_meta import warn_if_other_class_names
from dgseg.engine.distributed import model_device
from dgseg.engine.text_tower_check import check_text_tower, exported_text_tower
from dgseg.models.weights_io import mismatch_report

FULL_FORMAT = "dgseg.full.v1"


def config_of_checkpoint(meta: dict, overrides: list[str] | None = None, config_path: str | None = None,
                         checkpoint: str | Path | None = None) -> Config:
    """The config stored in a checkpoint (or ``config_path``), with ``key=value`` overrides. An error about a key
    no override wrote names the config stored in ``checkpoint``, when given (here, or when the model is built)."""
    if config_path is not None:
        return load_config(config_path, overrides)
    if "config" not in meta:
        where = f"{checkpoint}: its" if checkpoint is not None else "checkpoint"
        raise CheckpointError(f"{where} metadata has no 'config' (it was not written by dgseg train or import-rein); "
                              "dgseg eval takes the experiment's CONFIG before --checkpoint, predict and export "
                              "need a checkpoint that stores its config")
    import yaml

    from dgseg.config import _apply_override
    from dgseg.config.loading import config_from_traced

    data = meta["config"]
    data = yaml.safe_load(yaml.safe_dump(data))
    keys = {o.split("=", 1)[0].strip() for o in overrides or []}
    if "data.classes" in keys and "model.num_classes" not in keys:  # the stored count followed the old classes
        data.get("model", {})["num_classes"] = None
    origins: dict = {}  # an error about a key an override wrote names the override
    for o in overrides or []:
        _apply_override(data, o, origins)
    return config_from_traced(data, origins, None if checkpoint is None else f"the config stored in {checkpoint}")


def stored_config(checkpoint: str | Path, overrides: list[str] | None = None) -> Config:
    """The config stored in ``checkpoint`` with ``overrides``, read from its header alone (no tensor, no model):
    what a command checks before it loads the model."""
    return config_of_checkpoint(read_meta(checkpoint), overrides, checkpoint=checkpoint)


def load_model(checkpoint: str | Path, overrides: list[str] | None = None, config_path: str | None = None
               ) -> tuple[nn.Module, Config]:
    """Rebuild the model of a checkpoint (trainable weights + the backbone file it names, or a full export)."""
    import dgseg
    from dgseg.engine.train import load_trainable
    weights, meta = load_checkpoint(checkpoint)
    cfg = config_of_checkpoint(meta, overrides, config_path, checkpoint)
    try:
        check_backbone_layout(meta, config_to_dict(cfg))
    except CheckpointError as e:
        raise CheckpointError(f"{checkpoint}: {e}") from None
    from dgseg.models.text import stored_class_embeddings, stored_text_tower

    stored = weights.get("text.class_embeddings")  # fixed class embeddings: not read again from their file
    if meta.get("format") == FULL_FORMAT:  # every tensor is in the file: neither the backbone nor the text file
        cfg.model.backbone.weights = None
        with stored_class_embeddings(stored), stored_text_tower(exported_text_tower(weights, meta)):
            model = dgseg.build_model(cfg)
        own = model.state_dict()
        problems = mismatch_report(own, weights, own)
        if problems:
            raise CheckpointError(f"{checkpoint}: a full export must hold exactly the tensors of the model its "
                                  f"config describes: {problems}")
        model.load_state_dict(weights)
        return model.eval(), cfg
    expected = {"num_classes": cfg.model.num_classes}
    expected["backbone.name"] = cfg.model.backbone.name
    try:
        check_compatible(meta, expected)
    except CheckpointError as e:
        raise CheckpointError(f"{checkpoint}: {e}") from None
    warn_if_other_class_names(meta, cfg, str(checkpoint))
    check_backbone(checkpoint, meta, cfg)  # the same tensors, by content digest, wherever the file lives
    with stored_class_embeddings(stored):
        model = dgseg.build_model(cfg)
    check_text_tower(checkpoint, meta, cfg, model)  # a learned prompt's frozen tower, by content digest
    load_trainable(model, weights, str(checkpoint))
    return model.eval(), cfg


def predict_files(model: nn.Module, cfg: Config, inputs: list[str], out_dir: str | Path, mode: str | None = None,
                  progress: bool = True, resize: tuple[int, int] | float | None = None) -> list[Path]:
    """Write ``<stem>_labelTrainIds.png``, ``<stem>_color.png`` and ``<stem>_overlay.png`` per image file given
    or found in the given folders (:func:`dgseg.engine.submission.write_predictions` in the ``trainids``
    format: on the model's device, in the evaluation precision, each file by temp file + rename; an output
    name that is one of the input images is refused before anything is written)."""
    from dgseg.engine.prediction_files import list_images
    from dgseg.engine.submission import write_predictions

    return write_predictions(model, cfg, list_images(inputs), out_dir, "trainids", mode=mode, progress=progress,
                             resize=resize)


def export_full(model: nn.Module, cfg: Config, meta: dict, out_file: str | Path, replace: bool = True) -> Path:
    """One safetensors file with every weight (backbone included): loads without the backbone file.
    ``replace=False`` keeps and refuses a file at ``out_file`` (one that appeared while it was written, too)."""
    import json

    from safetensors.torch import save

    from dgseg.atomic import write_atomic

    full_meta = dict(meta, format=FULL_FORMAT, config=config_to_dict(cfg))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    return write_atomic(out_file, lambda f: f.write(
        save(state, metadata={"dgseg_meta": json.dumps(full_meta), "format": FULL_FORMAT})), replace=replace)


class ScoresModule(nn.Module):
    """Image [1, 3, H, W] (normalised) -> class scores [1, K, H, W], for export."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model._scores(images)


@contextlib.contextmanager
def plain_pos_embed_resampling():
    """timm resamples position embeddings with antialiased bicubic, which ONNX lacks; the export uses plain
    bicubic instead. That is a different function (PIL's a = -0.5 kernel against torch's a = -0.75, when
    upsampling too) unless the grid keeps its stored size: export CLIP / EVA / SAM models at the training
    crop for an exact graph. DINOv2 backbones resample as DINOv2 does (plain bicubic,
    :mod:`dgseg.models.dinov2_pos`), so their export is exact at any size."""
    import timm.models.eva as eva
    import timm.models.vision_transformer as vit
    import timm.models.vision_transformer_sam as sam

    saved = [(m, m.resample_abs_pos_embed) for m in (vit, eva) if hasattr(m, "resample_abs_pos_embed")]
    saved += [(sam, sam.resample_abs_pos_embed_nhwc)] if hasattr(sam, "resample_abs_pos_embed_nhwc") else []
    try:
        for m, fn in saved:
            name = "resample_abs_pos_embed_nhwc" if m is sam else "resample_abs_pos_embed"
            setattr(m, name, functools.partial(fn, antialias=False))
        yield
    finally:
        for m, fn in saved:
            setattr(m, "resample_abs_pos_embed_nhwc" if m is sam else "resample_abs_pos_embed", fn)


ONNX_EXTRA = "pip install 'dgseg[onnx]'  (or: pip install onnx onnxruntime)"


def require_onnx() -> None:
    """Raises RuntimeError (the install hint) unless onnx (the file check) and onnxruntime (the comparison with
    PyTorch) import: an ONNX export needs both, said before the model loads or a file is written."""
    for package in ("onnx", "onnxruntime"):
        try:
            importlib.import_module(package)
        except ImportError as exc:
            raise RuntimeError(f"--format onnx needs the {package} package ({exc}): {ONNX_EXTRA}") from exc


MAX_EXPORT_PIXELS = 4096 * 4096
"""The most pixels ``export --size H W`` takes: a sanity bound against a mistyped size, not a promise that a
smaller one fits in memory. The export runs the model at that size (PyTorch's trace, then the onnxruntime
check, which computes each block's attention maps whole: tokens² floats per head). At 4096 x 4096 a ViT has
65,536 tokens with 16-px patches, so one head's map alone is 16 GiB of float32 and a block's hundreds of GiB:
no machine dgseg runs on checks a larger export. The token count is about H x W / patch², so this bound on
H x W is that one for every patch size, and needs no model: it is checked before the model is loaded. It is
twice the area of the largest sizes exported in practice (Mapillary-size 2048 x 4096; Cityscapes 1024 x 2048)."""
MAX_EXPORT_SIDE = 8192
"""The longest side ``export --size`` takes: twice 4096, the longer side of 2048 x 4096. A size with few pixels
can still be absurd: 9 x 200000 (fewer pixels than 2048 x 4096, but 22,000 times wider than high) is no image,
and it ran out of memory in the onnxruntime check of a model with 8-px patches (50,000 tokens)."""


def check_export_size(fmt: str, size: list[int] | None) -> None:
    """Refuses a ``--size`` that is not a height and width of 1 px or more, that is beyond
    :data:`MAX_EXPORT_SIDE` or :data:`MAX_EXPORT_PIXELS`, or one given to a full export; ``--format onnx``
    without its packages (:func:`require_onnx`)."""
    if fmt == "onnx":
        require_onnx()
    if size is None:
        return
    if fmt != "onnx":
        raise ValueError(f"--size {size[0]} {size[1]}: only --format onnx has an input size; leave --size out "
                         f"of --format {fmt}")
    if min(size) < 1:
        raise ValueError(f"--size {size[0]} {size[1]}: expected the ONNX input's height and width in pixels, "
                         "each 1 or more (e.g. --size 512 512)")
    pixels = size[0] * size[1]
    if max(size) > MAX_EXPORT_SIDE or pixels > MAX_EXPORT_PIXELS:
        why = (f"a side over {MAX_EXPORT_SIDE} px" if max(size) > MAX_EXPORT_SIDE
               else f"{pixels:,} px, more than 4096 x 4096")
        raise ValueError(f"--size {size[0]} {size[1]}: {why}; expected the ONNX input's height and width in "
                         f"pixels, each at most {MAX_EXPORT_SIDE} and at most 4096 x 4096 = {MAX_EXPORT_PIXELS:,} "
                         "px in all (e.g. --size 1024 2048 or 2048 4096); the export runs the model at that size "
                         "twice, its onnxruntime check with every attention map whole")


@contextlib.contextmanager
def constant_rope_tables(module: nn.Module, dummy: torch.Tensor):
    """EVA02's rotary position tables (timm's ``RotaryEmbedding*.get_embed``) as constants of the traced graph:
    timm builds them from the input's grid size, and the TorchScript exporter fails on that computation (an
    ONNX Expand shape assert; with ``patch_remainder: pad``, a Concat onnxruntime cannot infer). The export is at
    one fixed size, so the tables are computed once by a plain forward of ``dummy`` and returned while tracing."""
    ropes = [m for m in module.modules() if type(m).__module__.startswith("timm.layers.pos_embed_sincos")
             and callable(getattr(m, "get_embed", None))]
    tables: dict[tuple[int, tuple[int, ...] | None], torch.Tensor] = {}

    def fixed(rope: nn.Module, build):
        def get_embed(shape=None, **kwargs):
            key = (id(rope), None if shape is None else tuple(int(s) for s in shape))
            if torch.jit.is_tracing():
                return tables[key]
            tables[key] = build(shape=shape, **kwargs)
            return tables[key]
        return get_embed

    try:
        for rope in ropes:
            rope.get_embed = fixed(rope, rope.get_embed)
        if ropes:
            with torch.no_grad():
                module(dummy)
        yield
    finally:
        for rope in ropes:
            rope.__dict__.pop("get_embed", None)


def export_onnx(model: nn.Module, cfg: Config, out_file: str | Path, size: tuple[int, int] | None = None,
                replace: bool = True, check: Callable[[Path], object] | None = None) -> Path:
    """ONNX graph of whole-image inference at a fixed ``size`` (default: the training crop), with the class
    and input metadata; a model over 2 GB keeps its weights in ``<out_file>.data`` beside it
    (:func:`dgseg.engine.onnx_files.write_onnx`, which runs ``check`` on the finished file before it lands).
    ``replace=False`` keeps and refuses existing outputs."""
    from dgseg.engine.onnx_files import write_onnx
    from dgseg.image_size import image_size_problem, model_size_rule

    h, w = size or tuple(cfg.data.crop_size)
    rule = model_size_rule(model)
    problem = None if rule is None else image_size_problem(h, w, rule)
    if problem is not None:
        raise ValueError(f"ONNX input size {h} {w} (--size H W): {problem}")
    dummy = torch.randn(1, 3, h, w, device=model_device(model))  # traced where the model is
    module = ScoresModule(model.eval()).eval()

    def export(path: Path) -> None:
        with plain_pos_embed_resampling(), constant_rope_tables(module, dummy), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(module, (dummy,), str(path), input_names=["image"], output_names=["scores"],
                              opset_version=17, dynamo=False)

    return write_onnx(export, out_file, cfg, replace, check)


def export_checked_onnx(model: nn.Module, cfg: Config, out_file: str | Path, size: tuple[int, int],
                        replace: bool = True) -> tuple[Path, float]:
    """:func:`export_onnx` with :func:`check_onnx` run on the finished file before it is put at ``out_file``:
    the path and onnxruntime's max abs difference from PyTorch. A file onnxruntime cannot load or run raises
    RuntimeError naming ``out_file`` and the failure; nothing is left at the outputs."""
    diffs: list[float] = []

    def check(path: Path) -> None:
        try:
            diffs.append(check_onnx(model, path, size))
        except Exception as e:
            reason = str(e).replace(str(path), "the graph").strip().splitlines()
            raise RuntimeError(f"{out_file}: the exported ONNX graph failed its onnxruntime check at {size[0]}x"
                               f"{size[1]}, so it was not written ({type(e).__name__}: "
                               f"{reason[0] if reason else ''})") from e

    return export_onnx(model, cfg, out_file, size, replace, check), diffs[0]


def check_onnx_file(onnx_file: str | Path, size: tuple[int, int] | None = None) -> None:
    """Raises CheckpointError unless ``onnx_file`` is a valid ONNX model with dgseg's interface: one input
    ``image`` [1, 3, H, W] (H, W = ``size`` when given) and one output ``scores`` [1, K, H, W]."""
    import onnx

    try:  # the checker reads the file itself: a graph with its weights in <name>.data (over 2 GB) too
        onnx.checker.check_model(str(onnx_file))
        model = onnx.load(str(onnx_file), load_external_data=False)
    except Exception as e:
        raise CheckpointError(f"{onnx_file}: not a valid ONNX model ({type(e).__name__}: {e})") from e
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    outputs = list(graph.output)

    def dims(value) -> list:
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]

    found = f"inputs {[(i.name, dims(i)) for i in inputs]}, outputs {[(o.name, dims(o)) for o in outputs]}"
    want_in = [1, 3, *size] if size is not None else None
    if ([i.name for i in inputs] != ["image"] or [o.name for o in outputs] != ["scores"]
            or (want_in is not None and dims(inputs[0]) != want_in) or len(dims(outputs[0])) != 4):
        raise CheckpointError(
            f"{onnx_file}: not a dgseg segmentation export: expected input 'image' "
            f"{want_in or '[1, 3, H, W]'} and output 'scores' [1, K, H, W], found {found}"
        )


def check_onnx(model: nn.Module, onnx_file: str | Path, size: tuple[int, int], seed: int = 0) -> float:
    """Max abs difference between onnxruntime and PyTorch on a random input (after :func:`check_onnx_file`)."""
    import onnxruntime as ort

    check_onnx_file(onnx_file, size)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, *size, generator=g)
    with torch.no_grad(), plain_pos_embed_resampling():
        ref = model._scores(x.to(model_device(model))).float().cpu().numpy()
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = sess.run(["scores"], {"image": x.numpy()})[0]
    return float(np.abs(got - ref).max())
