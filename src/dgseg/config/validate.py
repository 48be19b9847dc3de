"""Validating a built :class:`Config` beyond the types of its keys: allowed names (:data:`CHOICES`),
positive sizes and counts, ranges, consistency between keys (crop vs resize, stride vs crop, data.source
and data.mean_over naming data.val entries) and the class set (``data.classes`` vs ``model.num_classes``).
"""

from __future__ import annotations

from .schema import CHOICES, LOG_BACKENDS, Config, ConfigError, DatasetSpec, hw_pair


def validate_config(cfg: Config) -> None:
    """Raise a ConfigError naming the key and what is expected when ``cfg`` is not a possible experiment."""
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
        "model.neck.norm": cfg.model.neck.norm,
        "model.backbone.pos_embed_init": cfg.model.backbone.pos_embed_init,
        "model.backbone.patch_remainder": cfg.model.backbone.patch_remainder,
        "model.backbone.pos_embed_resample": cfg.model.backbone.pos_embed_resample,
        "model.text.name": cfg.model.text.name,
        "model.text.activation": cfg.model.text.activation,
        "model.text.context_init": cfg.model.text.context_init,
        "data.on_error": cfg.data.on_error,
        "data.unknown_labels": cfg.data.unknown_labels,
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
    if cfg.train.no_decay_keys is not None and not all(k.strip() for k in cfg.train.no_decay_keys):
        raise ConfigError(f"train.no_decay_keys: expected parameter-name parts (non-empty strings) or null, got "
                          f"{cfg.train.no_decay_keys}")
    _check_custom_keys(cfg.train.custom_keys)
    if not 0 <= cfg.train.seed < 2**32:  # the range of numpy's seeds
        raise ConfigError(f"train.seed: expected a whole number in [0, 2**32 - 1 = {2**32 - 1}], got {cfg.train.seed}")
    if cfg.train.grad_clip is not None and cfg.train.grad_clip <= 0:
        raise ConfigError(f"train.grad_clip: must be > 0 or null, got {cfg.train.grad_clip}")
    if len(cfg.data.crop_size) != 2 or min(cfg.data.crop_size) <= 0:
        raise ConfigError(f"data.crop_size: expected [H, W] > 0, got {cfg.data.crop_size}")
    if len(cfg.data.scale) != 2 or len(cfg.data.ratio_range) != 2:
        raise ConfigError("data.scale and data.ratio_range: expected two numbers each")
    if min(cfg.data.scale) <= 0:
        sides = "[long edge, short edge]" if cfg.data.keep_ratio else "[W, H] (data.keep_ratio: false)"
        raise ConfigError(f"data.scale: expected {sides} > 0, got {cfg.data.scale}")
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
    windows = {}
    for key in ("crop", "stride"):
        value = getattr(cfg.eval, key)
        pair = hw_pair(value) if isinstance(value, int) or len(value) == 2 else (0, 0)
        if min(pair) <= 0:
            raise ConfigError(f"eval.{key}: expected a size > 0 or [H, W] > 0, got {value}")
        windows[key] = pair
    if any(s > c for s, c in zip(windows["stride"], windows["crop"])):
        raise ConfigError(f"eval.stride ({cfg.eval.stride}) must not exceed eval.crop ({cfg.eval.crop}) on either axis")
    if not cfg.eval.tta.scales or min(cfg.eval.tta.scales) <= 0:
        raise ConfigError(f"eval.tta.scales: expected a non-empty list of factors > 0, got {cfg.eval.tta.scales}")
    for i, spec in enumerate(cfg.data.val):
        if spec.prescale is not None and not 0 < spec.prescale <= 1:
            raise ConfigError(f"data.val[{i}].prescale: expected a factor in (0, 1], got {spec.prescale}")
        if spec.mode is not None and spec.mode not in CHOICES["eval.mode"]:
            raise ConfigError(f"data.val[{i}].mode: '{spec.mode}' is not one of whole, slide")
        if spec.label is not None and (not spec.label.strip() or not spec.label.isprintable()):
            raise ConfigError(f"data.val[{i}].label: expected a non-empty name on one line (no line break, tab or "
                              f"other control character) for the entry's results row, got {spec.label!r}")
    _check_domain_labels(cfg)  # first: two entries sharing a row are the problem, not the rows data.source names
    _check_rows_named(cfg)
    _check_ranges(cfg)
    _check_entry_keys(cfg)
    b = cfg.model.backbone
    if b.patch_size is not None and b.patch_size <= 0:
        raise ConfigError(f"model.backbone.patch_size: must be > 0 or null, got {b.patch_size}")
    if not b.final_norm and cfg.model.text.name != "none":
        raise ConfigError("model.backbone.final_norm: false removes the final norm that CLIP text guidance "
                          f"(model.text.name: {cfg.model.text.name}) reads before the visual projection; keep it true")
    if cfg.model.neck.norm != "layer" and cfg.model.neck.name != "fpn":
        raise ConfigError(f"model.neck.norm: '{cfg.model.neck.norm}' applies to the fpn neck only "
                          f"(model.neck.name is '{cfg.model.neck.name}', which has no norm)")
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
    _check_model_shapes(cfg)
    _check_paths(cfg)
    from dgseg.data.classes import ClassSetError, resolve_config_classes

    try:
        resolve_config_classes(cfg)  # model.num_classes from data.classes; label maps checked
    except ClassSetError as e:
        raise ConfigError(str(e)) from None


def _check_paths(cfg: Config) -> None:
    """A path key set to an empty string would be read as the current folder ('' is Path('.')): refused."""
    m = cfg.model
    paths = {"model.backbone.weights": m.backbone.weights, "model.text.weights": m.text.weights,
             "model.text.embeddings": m.text.embeddings}
    for group, specs in (("train", cfg.data.train), ("val", cfg.data.val)):
        for i, spec in enumerate(specs):
            paths[f"data.{group}[{i}].split_file"] = spec.split_file
            if not spec.generated:  # the generated benchmark's root is null or ''
                paths[f"data.{group}[{i}].root"] = spec.root
    for key, value in paths.items():
        if value is not None and not value.strip():
            raise ConfigError(f"{key}: expected a path or null, got {value!r}")


def _check_model_shapes(cfg: Config) -> None:
    """Sizes that only make a model together: Rein / VPT need tokens, LoRA a rank, the neck four block outputs,
    the Mask2Former head a width that its GroupNorm(32) and its attention heads divide."""
    a, h, b = cfg.model.adapter, cfg.model.head, cfg.model.backbone
    if a.tokens == 0 and a.name in ("rein", "vpt"):
        raise ConfigError(f"model.adapter.tokens: must be >= 1 for {a.name} (its learnable tokens per block), got 0; "
                          "model.adapter.name: frozen trains no backbone tokens at all")
    if a.rank == 0 and a.name == "lora":
        raise ConfigError("model.adapter.rank: must be >= 1 for lora, got 0 (rank 0 means full rank for rein only)")
    if b.out_indices is not None and len(b.out_indices) != 4:
        raise ConfigError(f"model.backbone.out_indices: expected 4 block indices (the neck makes the strides 4, 8, 16 "
                          f"and 32 of four block outputs; repeat a block on a shallow model), got {b.out_indices}")
    if h.name == "mask2former":
        if h.hidden_dim % 32:
            raise ConfigError(f"model.head.hidden_dim: must be a multiple of 32 (the pixel decoder's GroupNorm has 32 "
                              f"groups), got {h.hidden_dim}")
        if h.hidden_dim % h.num_heads:
            raise ConfigError(f"model.head.hidden_dim ({h.hidden_dim}) must be divisible by model.head.num_heads "
                              f"({h.num_heads})")


CUSTOM_KEY_MULTS = ("lr_mult", "decay_mult")


def _check_custom_keys(custom: dict | None) -> None:
    """``train.custom_keys``: non-empty name parts, each a mapping of lr_mult / decay_mult, numbers >= 0
    (the loader has already refused what is not a number)."""
    for key, mults in (custom or {}).items():
        if not key.strip():
            raise ConfigError(f"train.custom_keys: expected parameter-name parts (non-empty strings), got {key!r}")
        unknown = sorted(set(mults) - set(CUSTOM_KEY_MULTS))
        if unknown:
            raise ConfigError(f"train.custom_keys.{key}: unknown {unknown}; expected a mapping of "
                              f"{' / '.join(CUSTOM_KEY_MULTS)} (numbers >= 0, each 1.0 when left out)")
        negative = {k: v for k, v in mults.items() if v < 0}
        if negative:
            raise ConfigError(f"train.custom_keys.{key}: {' and '.join(negative)} must be >= 0, got {negative}")


def _check_ranges(cfg: Config) -> None:
    """The numeric keys outside the checks above: sizes and counts > 0, weights >= 0, fractions in [0, 1]."""
    h, a, t, d = cfg.model.head, cfg.model.adapter, cfg.model.text, cfg.data
    at_least = {  # key: (value, smallest allowed value)
        "model.head.hidden_dim": (h.hidden_dim, 1), "model.head.num_queries": (h.num_queries, 1),
        "model.head.enc_layers": (h.enc_layers, 1), "model.head.enc_ffn": (h.enc_ffn, 1),
        "model.head.dec_layers": (h.dec_layers, 1), "model.head.dec_ffn": (h.dec_ffn, 1),
        "model.head.num_heads": (h.num_heads, 1), "model.head.num_points": (h.num_points, 1),
        "model.head.train_points": (h.train_points, 1), "model.head.oversample_ratio": (h.oversample_ratio, 1),
        "model.head.class_weight": (h.class_weight, 0), "model.head.mask_weight": (h.mask_weight, 0),
        "model.head.dice_weight": (h.dice_weight, 0), "model.head.no_object_weight": (h.no_object_weight, 0),
        "model.adapter.query_dim": (a.query_dim, 1), "model.adapter.width": (a.width, 1),
        "model.adapter.lr_mult": (a.lr_mult, 0), "model.text.context_length": (t.context_length, 0),
        "model.text.aux_weight": (t.aux_weight, 0), "train.power": (cfg.train.power, 0),
        "data.max_long_edge": (d.max_long_edge, 1),
    }
    for key, (value, low) in at_least.items():
        if value < low:
            raise ConfigError(f"{key}: must be >= {low}, got {value}")
    if not cfg.model.text.temperature > 0:
        raise ConfigError(f"model.text.temperature: must be > 0, got {cfg.model.text.temperature}")
    fractions = {"data.flip_prob": d.flip_prob, "model.head.importance_sample_ratio": h.importance_sample_ratio}
    for key, value in fractions.items():
        if not 0 <= value <= 1:
            raise ConfigError(f"{key}: expected a probability in [0, 1], got {value}")
    if not 0 <= cfg.model.backbone.drop_path < 1:
        raise ConfigError(f"model.backbone.drop_path: expected a rate in [0, 1), got {cfg.model.backbone.drop_path}")
    for group, specs in (("train", d.train), ("val", d.val)):
        for i, spec in enumerate(specs):
            if spec.length is not None and spec.length <= 0:
                raise ConfigError(f"data.{group}[{i}].length: must be > 0, got {spec.length}")
            if spec.size is not None and (len(spec.size) != 2 or min(spec.size) <= 0):
                raise ConfigError(f"data.{group}[{i}].size: expected [H, W] > 0, got {spec.size}")
            resize = spec.resize
            if isinstance(resize, list):
                bad = len(resize) != 2 or min(resize) <= 0
            else:
                bad = resize is not None and resize <= 0
            if bad:
                raise ConfigError(f"data.{group}[{i}].resize: expected [W, H] > 0 or a factor > 0, got {resize}")


EVAL_ONLY_KEYS = ("resize", "prescale", "mode", "label")
"""DatasetSpec keys that only evaluation reads; a training entry is resized and cropped by the data.* keys."""


def _check_entry_keys(cfg: Config) -> None:
    """A data entry key that its entry never reads is refused, not silently dropped: evaluation-only keys on
    data.train entries, the generated benchmark's length / size / seed on datasets of files."""
    for i, spec in enumerate(cfg.data.train):
        given = [k for k in EVAL_ONLY_KEYS if getattr(spec, k) is not None]
        if given:
            why = {"label": "it names a row of the evaluation results",
                   "mode": "it sets how an evaluation entry is predicted (whole or slide)"}.get(
                given[0], "a training entry is resized and cropped by data.scale, data.ratio_range or "
                          "data.short_edges, and data.crop_size")
            raise ConfigError(f"data.train[{i}].{given[0]}: applies to evaluation entries (data.val) only; training "
                              f"never reads it ({why}); remove it")
    for group, specs in (("train", cfg.data.train), ("val", cfg.data.val)):
        for i, spec in enumerate(specs):
            if spec.generated:
                if spec.seed < 0:
                    raise ConfigError(f"data.{group}[{i}].seed: must be >= 0, got {spec.seed}")
                continue
            given = [k for k in ("length", "size") if getattr(spec, k) is not None] + (["seed"] if spec.seed else [])
            if given:
                raise ConfigError(f"data.{group}[{i}].{given[0]}: applies to the generated synthetic-* datasets only; "
                                  f"'{spec.name}' reads its files (a subset of them: split_file); remove it")


def _row_hint(value: str, specs: list[DatasetSpec]) -> str:
    """Why ``value``, the name of a data.val entry, is not a results row: the row that entry writes instead."""
    rows = [f"data.val[{i}] writes row '{domain_name(s, specs)}'" for i, s in enumerate(specs)
            if value in (s.name, f"{s.name}:{s.split}")]
    return f" ({'; '.join(rows)})" if rows else ""


def _check_rows_named(cfg: Config) -> None:
    """``data.source`` and ``data.mean_over`` name rows of the results: an entry's label, else its name (plus
    ``:split`` when the name repeats), as :func:`domain_name`; anything else would fail only after training."""
    val = cfg.data.val
    rows = [domain_name(s, val) for s in val]
    source = cfg.data.source
    if source is not None and source not in rows:
        raise ConfigError(f"data.source: '{source}' is not one of the data.val names or labels {rows}"
                          f"{_row_hint(source, val)}; set data.source to the one that is the training domain, or "
                          "to null (--set data.source=null) when no data.val entry is the training domain")
    mean_over = cfg.data.mean_over
    bad = [m for m in mean_over or [] if m not in rows]
    if bad or mean_over == []:
        hint = _row_hint(bad[0], val) if bad else ""
        raise ConfigError(f"data.mean_over: {bad or '[]'} must name data.val entries, one of {rows}{hint}")
    twice = sorted({m for m in mean_over or [] if mean_over.count(m) > 1})
    if twice:
        raise ConfigError(f"data.mean_over: {twice} named more than once; the mean would count them twice; "
                          "name each data.val entry once")


def domain_name(spec: DatasetSpec, specs: list[DatasetSpec]) -> str:
    """The table label of an eval entry: its ``label``, else its name, plus the split when the name repeats
    among the entries without a label."""
    if spec.label is not None:
        return spec.label
    same = [s for s in specs if s.name == spec.name and s.label is None]
    return spec.name if len(same) == 1 else f"{spec.name}:{spec.split}"


def source_entry(cfg: Config) -> DatasetSpec | None:
    """The data.val entry whose results row is ``data.source`` (None when it is null)."""
    return next((s for s in cfg.data.val if domain_name(s, cfg.data.val) == cfg.data.source), None)


def _check_domain_labels(cfg: Config) -> None:
    """Two data.val entries with the same table label (name, plus split when the name repeats) would write
    their results under one key: the second would replace the first."""
    seen: dict[str, int] = {}
    for i, spec in enumerate(cfg.data.val):
        label = domain_name(spec, cfg.data.val)
        if label in seen:
            raise ConfigError(
                f"data.val[{seen[label]}] and data.val[{i}] are both '{label}' (same name and split): their results "
                f"would share one row; give one a label (data.val[{i}].label: NAME), or drop it")
        seen[label] = i


def refuse_unused_resize_keys(cfg: Config) -> None:
    """A ConfigError for a training-resize key set (away from its default) that the resize then ignores: with
    ``data.short_edges`` (Rein's RandomChoiceResize) ``data.scale``, ``data.ratio_range`` and
    ``data.keep_ratio`` do nothing; without it ``data.max_long_edge`` does nothing. Checked when a new run
    starts training (:func:`dgseg.engine.train_setup.setup_training`), not when a stored config is read: a
    checkpoint trained before this check may hold such a key, and evaluating or resuming it stays possible."""
    from .schema import DataConfig

    d, default = cfg.data, DataConfig()
    if d.short_edges is not None:
        unused = [k for k in ("scale", "ratio_range", "keep_ratio") if getattr(d, k) != getattr(default, k)]
        why = (f"data.short_edges is set ({d.short_edges}): the training resize draws the short edge from it "
               "(Rein's RandomChoiceResize), and data.scale, data.ratio_range and data.keep_ratio are not used. "
               "Remove {key}, or set data.short_edges: null to resize by data.scale x data.ratio_range")
    else:
        unused = ["max_long_edge"] if d.max_long_edge != default.max_long_edge else []
        why = ("data.short_edges is null: the training resize fits the image to data.scale x data.ratio_range, "
               "and data.max_long_edge (the long-edge cap of a short-edge resize) is not used. Remove {key}, or set "
               "data.short_edges")
    if unused:
        key = f"data.{unused[0]}"
        raise ConfigError(f"{key} {getattr(d, unused[0])} does nothing in this config: " + why.format(key=key))
