"""Recipe files: YAML or JSON filled into nested dataclasses, with dotted command-line overrides.

    cfg = load_recipe(PretrainRecipe, "configs/pretrain/demo.yaml", ["train.lr=3e-4"])

Unknown keys are errors that name the file (or the override) and list the valid keys.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from zhplm.errors import ConfigError

T = TypeVar("T")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a YAML/JSON/override value to the dataclass field's type."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        for option in options:
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a valid {hint}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {hint.__name__} fields")
        return from_dict(hint, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(hint)
        item = args[0] if args else Any
        items = [_coerce(v, item, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = hint(value) if hint is float or isinstance(value, (int, str)) else None
        except (TypeError, ValueError):
            number = None
        if number is None or (hint is int and isinstance(value, float) and value != int(value)):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from `data`; unknown keys raise `ConfigError` listing valid ones."""
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys of {cls.__name__}: "
            f"{', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as plain nested dicts (for run directories and JSON)."""
    return dataclasses.asdict(obj)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"train.lr=3e-4"` -> (["train", "lr"], 0.0003); values are parsed as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has no key")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON recipe file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_recipe(cls: type[T], path: str | Path | None = None,
                overrides: typing.Sequence[str] = ()) -> T:
    """Load `cls` from a recipe file (optional) plus `section.key=value` overrides."""
    data = load_file(path) if path else {}
    return recipe_from_data(cls, data, overrides, str(path) if path else "recipe")


def recipe_from_data(cls: type[T], data: dict[str, Any], overrides: typing.Sequence[str] = (),
                     where: str = "recipe") -> T:
    """Build `cls` from a dict plus `section.key=value` overrides (unknown keys are errors)."""
    data = dict(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {key} is not a section")
            node = child
        node[keys[-1]] = value
        where = f"{where} (with overrides)"
    return from_dict(cls, data, where)
