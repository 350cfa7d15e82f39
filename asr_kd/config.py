"""Configs are plain dataclasses <-> YAML. Unknown keys are errors; overrides are dotted.

    cfg = load_config(TrainConfig, "conf/train.yaml", ["optim.lr=0.1", "model.hidden=[512,512]"])
    save_config(cfg, exp / "config.yaml")

Override values are parsed as YAML scalars/lists, then coerced to the field's declared type.

YAML is read with PyYAML's safe loader plus one resolver: PyYAML follows YAML 1.1, where `1e-3`
(no dot) is a string, so `lr: 1e-3` would fail as "expected float". YAML 1.2 and every other
parser read it as a float; the resolver below is the usual fix. A file section that is a config
dataclass is merged key by key into its defaults; any other value, including a dict field such
as `loss.terms`, replaces the default whole (so `terms: {soft_kl: 1.0}` means only soft_kl).
Range checks live in each dataclass's `__post_init__` (raising AsrKdError); from_dict prefixes
the message with the file and section.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from asr_kd.errors import AsrKdError
from asr_kd.io import write_text

T = TypeVar("T")


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats without a dot (`1e-3`, `5E+2`) as floats."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def parse_yaml(text: str):
    """YAML text -> Python values, with ConfigLoader (scientific notation is a float)."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader subclass)


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
    try:
        return cls(**kwargs)
    except AsrKdError as e:  # a range check in __post_init__: say which file/section it came from
        raise AsrKdError(f"{where}: {e}") from None


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
        node[leaf] = parse_yaml(raw)
    return from_dict(type(cfg), data)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of `cls`, updated by the YAML file at `path` (if any), then by overrides."""
    cfg = cls()
    if path is not None:
        data = read_yaml_mapping(path)
        merged = _merge(cls, to_dict(cfg), data)
        cfg = from_dict(cls, merged, str(path))
    return apply_overrides(cfg, overrides)


def read_yaml_mapping(path: str | Path) -> dict:
    """A YAML file that must hold a mapping (an empty file is an empty one)."""
    if Path(path).is_dir():
        raise AsrKdError(f"{path}: is a directory, expected a YAML config file")
    try:
        data = parse_yaml(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise AsrKdError(f"{path}: not UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except (OSError, yaml.YAMLError) as e:
        raise AsrKdError(f"{path}: cannot read config: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AsrKdError(f"{path}: a config must be a YAML mapping (key: value lines), got a "
                         f"{type(data).__name__}")
    return data


def _merge(cls, base: dict, update: dict) -> dict:
    """`update` over `base`: sections that are config dataclasses merge key by key, everything else
    (scalars, lists, dict-valued fields) is replaced whole. Unknown keys pass through to from_dict."""
    hints = typing.get_type_hints(cls)
    out = dict(base)
    for k, v in update.items():
        if k in hints and dataclasses.is_dataclass(hints[k]) and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(hints[k], out[k], v)
        else:
            out[k] = v
    return out


def require(condition: bool, message: str) -> None:
    """A config range check: raise AsrKdError(message) unless `condition` (never `assert`: -O drops it)."""
    if not condition:
        raise AsrKdError(message)


def save_config(cfg, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically: the record of exactly what a run did."""
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse then names the option in its error line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
