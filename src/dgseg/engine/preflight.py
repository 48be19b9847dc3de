"""Checks ``dgseg train`` makes on the config file itself, before anything is built.

Every config key has a default, so an empty YAML is a valid config: it would train the defaults (a
random-init ViT-S on the built-in synthetic scenes at 512 px for 40,000 iterations) into ``runs/experiment``.
That is never what someone who wrote a config meant, so training requires the file (with its ``_base_``
includes and ``--set`` overrides) to name the experiment (``name``) and its training data (``data.train``).
"""

from __future__ import annotations

from pathlib import Path

from dgseg.config import ConfigError, _apply_override, _read_yaml

REQUIRED_FOR_TRAINING = {
    "name": "the experiment's name (the default run folder is runs/<name>)",
    "data.train": "the datasets to train on, e.g. [{name: gtav, root: data/gta}]",
}


def missing_for_training(config_path: str | Path, overrides: list[str] | None = None) -> list[str]:
    """The keys of :data:`REQUIRED_FOR_TRAINING` that neither the file, its bases nor the overrides give."""
    data = _read_yaml(Path(config_path))
    for override in overrides or []:
        _apply_override(data, override)
    missing = []
    for key in REQUIRED_FOR_TRAINING:
        node = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node in (None, "", []):
            missing.append(key)
    return missing


def require_training_setup(config_path: str | Path, overrides: list[str] | None = None) -> None:
    """Raises ConfigError naming the file and every required key it lacks."""
    missing = missing_for_training(config_path, overrides)
    if missing:
        what = "; ".join(f"{k}: {REQUIRED_FOR_TRAINING[k]}" for k in missing)
        raise ConfigError(
            f"{config_path}: nothing to train: the config does not set {', '.join(missing)} ({what}). Without them "
            "dgseg would train its defaults (a random-init ViT-S on synthetic scenes for 40,000 iterations); "
            "start from a file in configs/ (e.g. configs/demo.yaml) or set them with --set"
        )
