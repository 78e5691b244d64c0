"""The one strict YAML reader: every error names the file and the dotted field.

Scene files (through ``Fields``) and configs (through ``read_dataclass``) both use it, so both
report mistakes the same way: unknown keys (with a "did you mean"), wrong types, out-of-range
values, duplicate keys.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import yaml

from .errors import UserError

MISSING = object()


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silent last-one-wins hides typos)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | os.PathLike) -> Any:
    """Read a YAML file with safe_load semantics; missing/unreadable/invalid -> UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError("file not found", file=path)
    if path.is_dir():
        raise UserError("is a directory, expected a YAML file", file=path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read: {exc}", file=path) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "yaml"
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"invalid YAML: {problem}", file=path, field=where) from None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class Fields:
    """A mapping from a YAML file plus where it came from (file + dotted path).

    All getters raise ``UserError(file, field, message)`` on a bad value, so callers never
    format error messages themselves.
    """

    def __init__(self, data: Any, file: str | os.PathLike, path: str = ""):
        self.file = str(file)
        self.path = path
        if not isinstance(data, dict):
            raise UserError(f"expected a mapping, got {_type_name(data)}", file=self.file,
                            field=path or "top level")
        self.data = data

    # -- paths and errors -------------------------------------------------------------------
    def field(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else str(key)

    def error(self, key: str | None, message: str) -> UserError:
        return UserError(message, file=self.file, field=self.field(key) if key is not None else (self.path or None))

    def check_keys(self, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        for key in self.data:
            if key not in allowed:
                raise self.error(str(key), f"unknown key{did_you_mean(str(key), allowed)}")

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def raw(self, key: str, default: Any = MISSING) -> Any:
        if key not in self.data or self.data[key] is None:
            if default is MISSING:
                raise self.error(key, "missing required field")
            return default
        return self.data[key]

    # -- typed getters ----------------------------------------------------------------------
    def number(self, key: str, default: Any = MISSING, *, integer: bool = False,
               min: float | None = None, max: float | None = None,
               min_exclusive: bool = False, max_exclusive: bool = False) -> Any:
        value = self.raw(key, default)
        if value is default and default is not MISSING:
            return value
        return check_number(value, self.error(key, "").file, self.field(key), integer=integer,
                            min=min, max=max, min_exclusive=min_exclusive, max_exclusive=max_exclusive)

    def string(self, key: str, default: Any = MISSING, choices: Iterable[str] | None = None) -> Any:
        value = self.raw(key, default)
        if value is default and default is not MISSING:
            return value
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {_type_name(value)}")
        if choices is not None:
            choices = list(choices)
            if value not in choices:
                raise self.error(key, f"must be one of {', '.join(choices)}, got '{value}'"
                                      f"{did_you_mean(value, choices)}")
        return value

    def boolean(self, key: str, default: Any = MISSING) -> Any:
        value = self.raw(key, default)
        if value is default and default is not MISSING:
            return value
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_type_name(value)}")
        return value

    def vector(self, key: str, n: int, default: Any = MISSING, *, nonzero: bool = False) -> Any:
        value = self.raw(key, default)
        if value is default and default is not MISSING:
            return value
        return check_array(value, (n,), self.file, self.field(key), nonzero=nonzero)

    def matrix(self, key: str, shape: tuple[int, int], default: Any = MISSING) -> Any:
        value = self.raw(key, default)
        if value is default and default is not MISSING:
            return value
        return check_array(value, shape, self.file, self.field(key))

    def mapping(self, key: str, default: Any = MISSING) -> "Fields | Any":
        value = self.raw(key, default)
        if value is default and default is not MISSING:
            return value
        return Fields(value, self.file, self.field(key))

    def mapping_list(self, key: str, default: Any = MISSING, min_len: int = 0) -> Any:
        value = self.raw(key, default)
        if value is default and default is not MISSING:
            return value
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {_type_name(value)}")
        if len(value) < min_len:
            raise self.error(key, f"needs at least {min_len} entr{'y' if min_len == 1 else 'ies'}, got {len(value)}")
        return [Fields(item, self.file, f"{self.field(key)}[{i}]") for i, item in enumerate(value)]

    def path_value(self, key: str, base_dir: Path, default: Any = MISSING, must_exist: bool = True) -> Any:
        """A file path relative to ``base_dir`` (the YAML file's folder)."""
        value = self.string(key, default)
        if value is default and default is not MISSING:
            return value
        p = Path(os.path.expanduser(value))
        if not p.is_absolute():
            p = base_dir / p
        if must_exist and not p.exists():
            raise self.error(key, f"file not found: {value}")
        return p


def check_number(value: Any, file: str | None, field: str, *, integer: bool = False,
                 min: float | None = None, max: float | None = None,
                 min_exclusive: bool = False, max_exclusive: bool = False) -> Any:
    """Validate one number; booleans are not numbers here (YAML 'yes' must not become 1)."""
    what = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"expected {what}, got {_type_name(value)}", file=file, field=field)
    if integer and not isinstance(value, int):
        if float(value).is_integer():
            value = int(value)
        else:
            raise UserError(f"expected {what}, got {value}", file=file, field=field)
    if not math.isfinite(value):
        raise UserError(f"must be finite, got {value}", file=file, field=field)
    if min is not None and (value < min or (min_exclusive and value == min)):
        raise UserError(f"must be {'>' if min_exclusive else '>='} {min}, got {value}", file=file, field=field)
    if max is not None and (value > max or (max_exclusive and value == max)):
        raise UserError(f"must be {'<' if max_exclusive else '<='} {max}, got {value}", file=file, field=field)
    return value


def check_array(value: Any, shape: tuple[int, ...], file: str | None, field: str, *,
                nonzero: bool = False) -> np.ndarray:
    """Validate a nested list of finite numbers with an exact shape; returns float64 array."""
    shape_txt = "x".join(str(s) for s in shape)
    try:
        if not isinstance(value, list):
            raise ValueError
        arr = np.asarray(value, dtype=object)
        if arr.shape != shape:
            raise ValueError
        flat = arr.reshape(-1).tolist()
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in flat):
            raise ValueError
        out = np.asarray(flat, dtype=np.float64).reshape(shape)
    except (ValueError, TypeError):
        what = f"a list of {shape[0]} numbers" if len(shape) == 1 else f"a {shape_txt} matrix of numbers"
        raise UserError(f"expected {what}, got {_short(value)}", file=file, field=field) from None
    if not np.all(np.isfinite(out)):
        raise UserError("must contain only finite numbers (no NaN/inf)", file=file, field=field)
    if nonzero and not np.any(out):
        raise UserError("must not be the zero vector", file=file, field=field)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def apply_override(data: dict, dotted: str, raw: str, file: str, check: Callable[[str], None] | None = None) -> None:
    """Set ``data[a][b] = yaml(raw)`` for an override ``a.b=raw``; the key must already exist.

    Type-checking happens when the config is validated afterwards; here we only refuse
    unknown keys (with the same "did you mean" as files) and non-scalar paths.
    """
    keys = dotted.split(".")
    node = data
    for i, key in enumerate(keys):
        where = ".".join(keys[: i + 1])
        if not isinstance(node, dict):
            raise UserError(f"'{'.'.join(keys[:i])}' is not a section", file=file, field=where)
        if key not in node:
            raise UserError(f"unknown key{did_you_mean(key, node.keys())}", file=file, field=where)
        if i == len(keys) - 1:
            try:
                value = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError:
                value = raw
            if isinstance(value, str):  # YAML 1.1 reads '1e12' as a string; users mean a number
                try:
                    value = float(value) if any(c in value for c in ".eE") else int(value)
                except ValueError:
                    pass
            node[key] = value
        else:
            node = node[key]


# -- typed dataclasses (configs) ------------------------------------------------------------

def check_value(value: Any, tp, file: str | None, field: str) -> Any:
    """Validate one config value against a dataclass field type (bool, int, float, str, list,
    or a nested dataclass); the same checks and messages as scene files."""
    if dataclasses.is_dataclass(tp):
        return read_dataclass(tp, value, file, field)
    if tp is bool:
        if not isinstance(value, bool):
            raise UserError(f"expected true or false, got {_type_name(value)}", file=file, field=field)
        return value
    if tp is int:
        return check_number(value, file, field, integer=True)
    if tp is float:
        return float(check_number(value, file, field))
    if tp is str:
        if not isinstance(value, str):
            raise UserError(f"expected a string, got {_type_name(value)}", file=file, field=field)
        return value
    if tp is list or typing.get_origin(tp) is list:
        if not isinstance(value, list):
            raise UserError(f"expected a list, got {_type_name(value)}", file=file, field=field)
        return list(value)
    return value


def read_dataclass(cls, data: Any, file: str | None, path: str = ""):
    """Build dataclass ``cls`` from a mapping, strictly: unknown keys and bad types are
    UserErrors naming ``file`` and the dotted field; missing keys take the defaults."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping, got {_type_name(data)}", file=file, field=path or "top level")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            raise UserError(f"unknown key{did_you_mean(str(key), names)}", file=file, field=where)
    kwargs = {name: check_value(data[name], hints[name], file, f"{path}.{name}" if path else name)
              for name in names if name in data}
    return cls(**kwargs)
