"""The class set recorded with a model: checked when a checkpoint is used, written into ONNX exports."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dgseg.config import Config
from dgseg.data.classes import config_class_set

ONNX_KEYS = ("dgseg.classes", "dgseg.palette", "dgseg.ignore_index")
INPUT_KEYS = ("dgseg.channels", "dgseg.mean", "dgseg.std")


def warn_if_other_class_names(meta: Mapping[str, Any], cfg: Config, source: str) -> None:
    """Warn when a checkpoint was trained with other class names than ``cfg`` gives (same count: the
    count is checked as ``num_classes``); the table would carry the config's names."""
    recorded = (meta.get("classes") or {}).get("names") if isinstance(meta.get("classes"), Mapping) else None
    if recorded is None:
        return
    names = list(config_class_set(cfg).names)
    if list(recorded) != names:
        warnings.warn(f"{source}: trained with the classes {list(recorded)}, but the config names them {names}; "
                      "results are labelled with the config's names", stacklevel=2)


def set_onnx_class_metadata(model: Any, cfg: Config) -> None:
    """Record the class names, palette and ignore index in an ONNX ``ModelProto``'s ``metadata_props``
    (``dgseg.classes``: JSON list of K names; ``dgseg.palette``: JSON [K, 3]; ``dgseg.ignore_index``), and
    how the input is prepared (``dgseg.channels``: ``RGB``; ``dgseg.mean`` / ``dgseg.std``: JSON [3], per
    channel on the 0-255 scale: image = (rgb - mean) / std), the normalisation of dgseg's own prediction
    (:class:`dgseg.data.EvalTransform`); other entries are kept. The file is written by
    :func:`dgseg.engine.onnx_files.write_onnx`."""
    from dgseg.data import EvalTransform

    cs = config_class_set(cfg)
    norm = EvalTransform(resize=None)
    values = {"dgseg.classes": json.dumps(list(cs.names)), "dgseg.palette": json.dumps(cs.to_dict()["palette"]),
              "dgseg.ignore_index": "255", "dgseg.channels": "RGB", "dgseg.mean": json.dumps(list(norm.mean)),
              "dgseg.std": json.dumps(list(norm.std))}
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def onnx_class_metadata(onnx_file: str | Path) -> dict[str, Any]:
    """``{"classes": [...], "palette": [[r, g, b], ...], "ignore_index": 255}`` read back from an export."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_file), load_external_data=False).metadata_props}
    missing = [k for k in ONNX_KEYS if k not in props]
    if missing:
        raise ValueError(f"{onnx_file}: no dgseg class metadata ({', '.join(missing)} missing)")
    return {"classes": json.loads(props["dgseg.classes"]), "palette": json.loads(props["dgseg.palette"]),
            "ignore_index": int(props["dgseg.ignore_index"])}
