"""Configuration machinery shared by every subcommand.

A configuration is a (nested) dataclass. Values come, in order of precedence, from the dataclass defaults, a YAML
file, and ``key=value`` overrides on the command line (dotted keys reach nested sections: ``optim.base_lr=2e-3``;
values are YAML, and a number with an exponent is a number).
Unknown keys and values of the wrong type are rejected with a :class:`ConfigError` that names the key, so a typo
never silently trains the wrong model. The resolved configuration is written next to every run.

A YAML file may build on another and state only what differs: ``_base_: demo_cpu.yaml`` (a path relative to the
file, or the name of a shipped config) is loaded first and the file's keys are merged over it, section by section.
Shipped configs live in the package (``gapless.configs``); :func:`resolve_config_path` finds one by name.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gapless.errors import ConfigError
from gapless.io import write_text

T = TypeVar("T")
BASE_KEY = "_base_"
_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading every number with an exponent as a number: YAML 1.1 (PyYAML's) takes ``2e-3``
    (no dot) and ``1.0e5`` (no sign) for strings, where YAML 1.2 and every user mean floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml_text(text: str) -> Any:
    """The value of YAML ``text`` (safe loading; numbers with an exponent are numbers). Raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data only


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(sorted(options))})"


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``, converting where it is lossless (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for section '{key}', got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if tp in _SCALARS or origin is dict or tp is dict:
        accepted, convert, expected = _SCALARS[dict if origin is dict else tp]
        if not accepted(value):
            raise ConfigError(f"{key}: expected {expected}, got {value!r}")
        return convert(value)
    return value


# Scalar annotations: (accepts the value, converts it losslessly, what was expected, for the error).
_SCALARS: dict[Any, tuple[Any, Any, str]] = {
    dict: (lambda v: isinstance(v, dict), dict, "a mapping"),
    bool: (lambda v: isinstance(v, bool), bool, "true/false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), int, "an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), float, "a number"),
    str: (lambda v: isinstance(v, str), str, "a string"),
    Path: (lambda v: isinstance(v, (str, Path)), Path, "a path"),
}


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise :class:`ConfigError`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    field_types = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in field_types:
            raise ConfigError(f"unknown config key '{prefix}{key}'{_suggest(key, list(field_types))}")
        kwargs[key] = _coerce(value, field_types[key], f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # __post_init__ validation; its message starts with the field name
        raise ConfigError(f"{prefix}{exc}") from exc


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe mapping of a config dataclass (paths as strings, tuples as lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], parsed value). Values are parsed as YAML scalars/lists (``x=[1, 2]``)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = load_yaml_text(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': cannot parse value ({exc})") from exc
    return key.split("."), value


def _merge(base: dict[str, Any], path: list[str], value: Any) -> None:
    node = base
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def shipped_configs() -> Path:
    """The folder of the configs shipped with gapless (package data)."""
    from importlib.resources import files

    return Path(str(files("gapless.configs")))


def resolve_config_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """A config file: ``name`` as a path (relative to ``relative_to`` when given), else a shipped config by name
    (``pretrain_vits16`` or ``pretrain_vits16.yaml``)."""
    path = Path(name)
    candidates = [relative_to / path if relative_to is not None and not path.is_absolute() else path]
    if len(path.parts) == 1:
        candidates.append(shipped_configs() / (path.name if path.suffix else f"{path.name}.yaml"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{candidates[0]}: config file not found")


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping in a YAML config file, with its ``_base_`` (if any) merged under it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = load_yaml_text(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: {BASE_KEY} must name one config file, got {base!r}")
    base_path = resolve_config_path(base, path.parent).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise ConfigError(f"{path}: {BASE_KEY} chain loops back to {base_path}")
    merged = load_yaml(base_path, (*_seen, path.resolve()))
    for key, value in flatten(data).items():
        _merge(merged, key.split("."), value)
    return merged


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults <- YAML file <- ``key=value`` overrides, validated against the dataclass ``cls``."""
    data = to_dict(cls())
    if path is not None:
        path = resolve_config_path(path)
        file_data = load_yaml(path)
        try:
            from_dict(cls, file_data)  # validate the file alone so its errors name the file
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        for key, value in flatten(file_data).items():
            _merge(data, key.split("."), value)
    for text in overrides or []:
        key, value = parse_override(text)
        _merge(data, key, value)
    return from_dict(cls, data)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; an empty mapping is a value of its own."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def fingerprint(data: dict[str, Any]) -> str:
    """A short, stable digest of a (plain) mapping: equal mappings, equal digests, whatever the key order."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_override(text: str) -> bool:
    """Whether a command-line word is a ``key=value`` override (a dotted name, then ``=``), not a path."""
    return bool(_OVERRIDE.match(text))


def split_overrides(words: list[str]) -> tuple[list[str], list[str]]:
    """(other words, ``key=value`` overrides) of a list of positional words, each in its order."""
    return [w for w in words if not is_override(w)], [w for w in words if is_override(w)]


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write the resolved configuration as YAML (write-then-rename, so a crash never leaves half a file)."""
    return write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), path)
