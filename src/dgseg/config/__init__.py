"""Experiment configuration: a dataclass tree loaded from YAML, with ``--set a.b=c`` overrides.

A YAML file may start with ``_base_: other.yaml`` (or a list of files, paths relative to the
including file); the bases are merged first, the file's own keys override them. Every key is
validated against the dataclasses: an unknown key names the closest valid ones, a wrong type
names the key and the expected type, an impossible value says what would be right.

``schema.py`` holds the dataclasses (their fields and docstrings document every key), ``CHOICES`` and
``ConfigError``; ``loading.py`` reads YAML, applies overrides and converts; ``validate.py`` checks the
built config. Every name is importable from ``dgseg.config``.
"""

from .loading import _apply_override as _apply_override
from .loading import _read_yaml as _read_yaml
from .loading import config_from_dict, config_to_dict, dump_config, load_config, parse_override
from .schema import (
    CHOICES,
    LOG_BACKENDS,
    AdapterConfig,
    BackboneConfig,
    Config,
    ConfigError,
    DataConfig,
    DatasetSpec,
    EvalConfig,
    HeadConfig,
    ModelConfig,
    NeckConfig,
    TextConfig,
    TrainConfig,
    TTAConfig,
)
from .validate import domain_name, source_entry, validate_config

__all__ = [
    "CHOICES", "LOG_BACKENDS",
    "AdapterConfig", "BackboneConfig", "Config", "ConfigError", "DataConfig", "DatasetSpec", "EvalConfig",
    "HeadConfig", "ModelConfig", "NeckConfig", "TTAConfig", "TextConfig", "TrainConfig",
    "config_from_dict", "config_to_dict", "dump_config", "load_config", "parse_override",
    "domain_name", "source_entry", "validate_config",
]  # fmt: skip
