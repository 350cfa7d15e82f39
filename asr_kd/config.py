"""Configs are plain dataclasses <-> YAML. Unknown keys are errors; overrides are dotted.

    cfg = load_config(TrainConfig, "conf/train.yaml", ["optim.lr=0.1", "model.hidden=[512,512]"])
    save_config(cfg, exp / "config.yaml")

Override values are parsed as YAML scalars/lists, then coerced to the field's declared type.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from asr_kd.errors import AsrKdError
from asr_kd.io import write_text

T = TypeVar("T")


def to_dict(cfg) -> dict:
    """A dataclass (nested) as plain dict of YAML-able values."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict | None, where: str = "config") -> T:
    """Build dataclass `cls` from `data`, recursively; unknown keys raise AsrKdError."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise AsrKdError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp, value, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise AsrKdError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where) if len(inner) == 1 else value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        (arg, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(arg, v, where) for v in value]
        return items if origin is list else tuple(items)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool, float) and not isinstance(value, tp):
        raise AsrKdError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def apply_overrides(cfg: T, overrides: list[str] | None) -> T:
    """Return a copy of `cfg` with `a.b.c=value` overrides applied (value parsed as YAML)."""
    data = to_dict(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise AsrKdError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        node = data
        *parents, leaf = key.strip().split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise AsrKdError(f"override {item!r}: {p!r} is not a config section")
            node = node[p]
        if leaf not in node:
            raise AsrKdError(f"override {item!r}: unknown key {leaf!r}; known: {sorted(node)}")
        node[leaf] = yaml.safe_load(raw)
    return from_dict(type(cfg), data)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of `cls`, updated by the YAML file at `path` (if any), then by overrides."""
    cfg = cls()
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise AsrKdError(f"{path}: cannot read config: {e}") from e
        merged = _merge(to_dict(cfg), data, str(path))
        cfg = from_dict(cls, merged, str(path))
    return apply_overrides(cfg, overrides)


def _merge(base: dict, update: dict, where: str) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, f"{where}.{k}")
        else:
            out[k] = v
    return out


def save_config(cfg, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically: the record of exactly what a run did."""
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
