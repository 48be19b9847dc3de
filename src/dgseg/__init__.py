"""dgseg: domain-generalized semantic segmentation with frozen vision foundation models."""

__version__ = "0.1.0"

from dgseg.config import Config, ConfigError, load_config  # noqa: E402


def build_model(cfg: Config):
    """Build the Segmentor of ``cfg`` on CPU with its backbone weights loaded.

    Every command builds its model here: a ValueError (an impossible combination of model keys, a weights file
    that does not fit) names where the key it is about was written, the config file or ``--set`` override, as a
    ConfigError of the loaded config does (:func:`dgseg.config.origins.name_writer`)."""
    from dgseg.config.origins import name_writer
    from dgseg.models.segmentor import build_model as _build

    try:
        if cfg.model.num_classes is None:  # a Config built in code: the class count comes from data.classes
            from dgseg.data.classes import resolve_config_classes

            resolve_config_classes(cfg)

        return _build(cfg)
    except ValueError as exc:
        name_writer(exc, cfg)
        raise


__all__ = ["Config", "ConfigError", "load_config", "build_model", "__version__"]
