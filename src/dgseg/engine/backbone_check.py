"""Is this the backbone a checkpoint was trained with? Compared by the content digest of its tensors.

A checkpoint stores only the trainable weights; its meta names the frozen backbone's weights as
``backbone = {"name", "weights" (the config entry), "file" (the file name), "digest" (content digest),
"sha256" (file bytes), "tensors" (name -> "DTYPE [SHAPE] SHA16"), "embedded"}``. Where the weights live
does not matter: any file with the same tensors passes, wherever it is and whatever its name.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from dgseg.config import Config
from dgseg.engine.checkpoint import CheckpointError
from dgseg.models.weights_digest import first_difference, reordered_metadata_hashes, weights_identity
from dgseg.models.weights_io import WeightsError, resolve_weights

__all__ = ["backbone_record", "check_backbone"]


def backbone_record(cfg: Config) -> dict:
    """What a checkpoint says about its backbone weights (see the module docstring)."""
    from dgseg.models.pretrained import EMBEDDED

    spec = cfg.model.backbone.weights
    record = {"name": cfg.model.backbone.name, "weights": spec, "embedded": spec in EMBEDDED}
    if spec is not None:
        identity = weights_identity(resolve_weights(spec, cfg.model.backbone.name))
        record.update(file=identity["file"], digest=identity["digest"], sha256=identity["sha256"],
                      tensors=identity["tensors"])
    return record


def _fix(recorded: dict) -> str:
    spec = recorded.get("weights")
    if recorded.get("embedded") and spec:
        return f"--set model.backbone.weights={spec} (embedded: imported into $DGSEG_HOME on first use)"
    return f"--set model.backbone.weights=PATH/TO/{recorded.get('file') or Path(str(spec)).name}"


def check_backbone(checkpoint: str | Path, meta: dict, cfg: Config) -> None:
    """Raises CheckpointError unless ``cfg``'s backbone weights hold the tensors ``checkpoint`` was trained
    with. Checkpoints without a content digest (older dgseg) pass when the file's sha256 matches, or when it
    differs only by the order of safetensors metadata entries (with a note); otherwise they are refused."""
    recorded = meta.get("backbone")
    spec = cfg.model.backbone.weights
    if not isinstance(recorded, dict) or spec is None or not (recorded.get("digest") or recorded.get("sha256")):
        return
    trained_with = f"{recorded.get('weights')} ({recorded.get('file') or 'file name not recorded'}"
    trained_with += f", content digest {str(recorded['digest'])[:12]})" if recorded.get("digest") else \
        f", sha256 {str(recorded['sha256'])[:12]})"
    try:
        path = resolve_weights(spec, cfg.model.backbone.name)
    except WeightsError as e:
        raise CheckpointError(
            f"{checkpoint}: was trained with backbone weights {trained_with}, which are not found here: {e}\n"
            f"Point it at a local copy of that file: {_fix(recorded)} (its tensors are checked)"
        ) from None
    current = weights_identity(path)
    if recorded.get("digest"):
        if recorded["digest"] == current["digest"]:
            return
        diff = first_difference(recorded.get("tensors"), current["tensors"])
        raise CheckpointError(
            f"{checkpoint}: the backbone weights differ from those it was trained with\n"
            f"  checkpoint: {trained_with}\n"
            f"  this setup: {path} (content digest {current['digest'][:12]})\n"
            f"  first differing tensor: {diff}\n"
            f"Point it at the file it was trained with: {_fix(recorded)}"
        )
    old = str(recorded["sha256"])
    if old == current["sha256"]:
        return
    if old in reordered_metadata_hashes(path):
        warnings.warn(
            f"note: {checkpoint} predates backbone content digests; its backbone file hash ({old[:12]}) "
            f"differs from {path} ({current['sha256'][:12]}) only in the order of the safetensors metadata "
            "entries, so the tensors are byte for byte the same: loading it", stacklevel=2)
        return
    raise CheckpointError(
        f"{checkpoint}: predates backbone content digests and its backbone file hash does not match\n"
        f"  checkpoint: {trained_with}\n"
        f"  this setup: {path} (sha256 {current['sha256'][:12]})\n"
        f"Point it at the file it was trained with: {_fix(recorded)}"
    )
