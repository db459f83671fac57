"""YAML file + `section.key=value` overrides -> a typed config dataclass (eval, self-instruct).

Same rules as `megacode.config.loader` (whose dataclass builder this reuses): unknown keys are
errors naming the file and key, values are type-checked, and each dataclass validates itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional, TypeVar

import yaml

from megacode.config.loader import build_dataclass, parse_override
from megacode.config.schema import ConfigError

T = TypeVar("T")


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def set_dotted(tree: dict, keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {key} is not a section")
    node[keys[-1]] = value


def load(cls: type[T], path: Optional[str | Path] = None, overrides: Iterable[str] = (),
         values: Optional[dict] = None) -> T:
    """`cls` from the YAML file (optional), then `values` (CLI flags), then `key=value` overrides."""
    tree = read_yaml(path) if path is not None else {}
    for dotted, value in (values or {}).items():
        if value is not None:
            set_dotted(tree, dotted.split("."), value)
    for text in overrides:
        keys, value = parse_override(text)
        set_dotted(tree, keys, value)
    try:
        return build_dataclass(cls, tree, "")
    except TypeError as err:  # a section given a scalar, etc.
        raise ConfigError(f"{path or 'config'}: {err}") from None
