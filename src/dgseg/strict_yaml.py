"""YAML read safely, refusing a key written twice in one mapping: PyYAML keeps the last one silently, so a
config or classes file with ``lr:`` twice would train with whichever came last, unannounced."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "load_yaml_text"]


class DuplicateKeyError(ValueError):
    """A key written twice in one YAML mapping (the message names the line and the key)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (PyYAML keeps the last silently)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' entries may be overridden: that is their use
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the safe loader refuses it itself
            continue
        if first is not None:
            raise DuplicateKeyError(f"line {key_node.start_mark.line + 1}: key {key!r} is written twice in one "
                                    f"mapping (first on line {first}); expected each key once")
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml_text(text: str) -> Any:
    """YAML ``text`` read safely, a key written twice in one mapping refused (ValueError naming the line)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
