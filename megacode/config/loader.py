"""The one boundary from YAML files and `section.key=value` overrides to `RunConfig`.

A config file may name a base with `base: other.yaml` (relative to itself); the file's keys
override the base's, then command-line overrides override both. Unknown keys are errors that
name the file and the key, so a typo never silently keeps a default.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from megacode.config.schema import ConfigError, RunConfig


def _read_yaml(path: Path, seen: tuple = ()) -> dict:
    if path in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    merged = _read_yaml((path.parent / base).resolve(), seen + (path,))
    _deep_update(merged, data)
    return merged


def _deep_update(target: dict, source: dict) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.iters=20` -> (['train', 'iters'], 20); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _set_dotted(tree: dict, keys: list[str], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(keys)}: {key} is not a section")
    node[keys[-1]] = value


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check a YAML value against a dataclass field's type; ints become floats where asked."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML 1.1 reads `1e-2` (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{where} must be float, got {value!r}") from None
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise ConfigError(f"{where} must be {annotation.__name__}, got {value!r}")
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{where} must be int, got {value!r}")
    return value


def build_dataclass(cls: type, values: dict, where: str) -> Any:
    """Construct dataclass `cls` from a nested dict, recursing into dataclass-typed fields."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join((where + '.' if where else '') + k for k in unknown)}; "
                          f"known: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        path = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build_dataclass(hint, value or {}, path)
        else:
            kwargs[name] = _coerce(value, hint, path)
    return cls(**kwargs)


def load_dataclass(cls: type, path: Optional[str | Path] = None, overrides: Iterable[str] = (),
                   values: Optional[dict] = None):
    """`cls` from the YAML file (optional), then `values` (dotted keys from CLI flags; None
    skipped), then `key=value` overrides; validated by the dataclasses themselves."""
    tree: dict = _read_yaml(Path(path).resolve()) if path is not None else {}
    for dotted, value in (values or {}).items():
        if value is not None:
            _set_dotted(tree, dotted.split("."), value)
    for text in overrides:
        keys, value = parse_override(text)
        _set_dotted(tree, keys, value)
    try:
        return build_dataclass(cls, tree, "")
    except TypeError as err:  # a section given a scalar, etc.
        raise ConfigError(f"{path or 'config'}: {err}") from None


def load_config(path: Optional[str | Path], overrides: Iterable[str] = ()) -> RunConfig:
    """Read `path` (may be None for all defaults), apply overrides, validate, return RunConfig."""
    return load_dataclass(RunConfig, path, overrides)


def config_from_dict(tree: dict) -> RunConfig:
    """Rebuild a RunConfig from `RunConfig.to_dict()` output (stored in checkpoints)."""
    return build_dataclass(RunConfig, tree, "")
