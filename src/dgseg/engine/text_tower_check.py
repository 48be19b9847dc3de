"""Is this the CLIP text tower a VLTSeg checkpoint was trained with? Compared by the content digest of its tensors.

A run that learns its prompt context keeps the frozen text tower in the model, read from ``model.text.weights``
at every load, and a checkpoint stores only the trainable weights. Its meta names the tower as
``text_tower = {"weights" (the config entry), "file" (the file name), "activation", "digest", "tensors"}``: the digest of the
tower's own tensors as loaded (``text.frozen.*``), so another file holding the same tower (an EVA-CLIP file or
the text tower alone, any name, anywhere) passes, and a different tower is refused by name, as the backbone is
(:mod:`dgseg.engine.backbone_check`). A run with fixed class embeddings keeps no tower: nothing to check. A
full export holds the tower itself and loads without the file (:func:`exported_text_tower`).
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from dgseg.config import Config
from dgseg.engine.checkpoint import CheckpointError
from dgseg.models.segmentor import TEXT_TOWER_PREFIX
from dgseg.models.weights_digest import first_difference, tensors_identity

__all__ = ["text_tower_record", "check_text_tower", "exported_text_tower"]


def _tower_identity(model: nn.Module) -> dict | None:
    tower = getattr(getattr(model, "text", None), "frozen", None)
    if tower is None:
        return None
    return tensors_identity(sorted(tower.state_dict().items()))


def text_tower_record(cfg: Config, model: nn.Module) -> dict | None:
    """What a checkpoint says about the frozen text tower of ``model`` (None: the model keeps none)."""
    identity = _tower_identity(model)
    if identity is None:
        return None
    spec = cfg.model.text.weights
    return {"weights": spec, "file": None if spec is None else Path(str(spec)).name,
            "activation": model.text.frozen.activation, **identity}


def exported_text_tower(weights: dict[str, Tensor], meta: dict) -> tuple[dict[str, Tensor], str] | None:
    """The frozen text tower a full export holds (its ``text.frozen.*`` tensors, unprefixed) and its activation as
    the meta records it, so the export loads without the ``model.text.weights`` file; None when it holds none or
    its meta does not say the activation (an export of an older dgseg: the file is read as before)."""
    recorded = meta.get("text_tower")
    activation = recorded.get("activation") if isinstance(recorded, dict) else None
    tower = {k[len(TEXT_TOWER_PREFIX):]: v for k, v in weights.items() if k.startswith(TEXT_TOWER_PREFIX)}
    return (tower, activation) if tower and activation in ("gelu", "quick_gelu") else None


def check_text_tower(checkpoint: str | Path, meta: dict, cfg: Config, model: nn.Module,
                     current: dict | None = None) -> None:
    """Raises CheckpointError unless ``model``'s text tower (built from ``cfg``'s ``model.text.weights``) holds
    the tensors ``checkpoint`` was trained with; a checkpoint that records none (no tower, or an older dgseg)
    passes. ``current``: the model's :func:`text_tower_record`, when already computed (it is hashed once)."""
    recorded = meta.get("text_tower")
    current = current if current is not None else _tower_identity(model)
    if not isinstance(recorded, dict) or not recorded.get("digest") or current is None:
        return
    if recorded["digest"] == current["digest"]:
        return
    diff = first_difference(recorded.get("tensors"), current["tensors"])
    raise CheckpointError(
        f"{checkpoint}: the CLIP text tower differs from the one it was trained with\n"
        f"  checkpoint: model.text.weights {recorded.get('weights')} (content digest {str(recorded['digest'])[:12]})\n"
        f"  this setup: model.text.weights {cfg.model.text.weights} (content digest {current['digest'][:12]})\n"
        f"  first differing tensor: {diff}\n"
        + (f"Point it at the file it was trained with: --set model.text.weights=PATH/TO/{recorded['file']}"
           if recorded.get("file") else "It was trained with a tower of model.text.arch alone (no weights file)")
    )
