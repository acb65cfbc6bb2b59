"""Helpers shared by the stage configs (typed dataclasses read from YAML mappings)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import fields, is_dataclass
from functools import lru_cache
from pathlib import Path

from codemill.errors import UserError

_SCALARS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


@lru_cache(maxsize=None)
def _hints(config_class: type) -> dict:
    try:
        return typing.get_type_hints(config_class)
    except (NameError, TypeError):  # an annotation this module cannot resolve: nothing to check
        return {}


def _accepts(annotation, value) -> bool | None:
    """Whether `value` (as YAML gives it) fits `annotation`; None when the annotation is not one
    this checker knows (a nested config, a custom type: its own from_dict checks it)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        verdicts = [_accepts(arm, value) for arm in typing.get_args(annotation)]
        return True if any(v for v in verdicts) else (None if None in verdicts else False)
    if annotation is type(None):
        return value is None
    if annotation is typing.Any:
        return True
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if annotation in _SCALARS:
        if annotation is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if annotation is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, annotation)
    if origin in (tuple, list) or annotation in (tuple, list):
        return isinstance(value, (list, tuple))
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return None


def _describe(annotation) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(choice) for choice in typing.get_args(annotation))
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if origin in (tuple, list) or annotation in (tuple, list):
        return "a list"
    if origin is dict or annotation is dict:
        return "a mapping"
    return getattr(annotation, "__name__", str(annotation))


def reject_unknown(config_class: type, values: dict, what: str) -> None:
    """Clear errors for a config mapping: unknown keys (typos must not pass silently) and values of
    the wrong type (a string where a number goes), each naming the setting and what it takes."""
    if not isinstance(values, dict):
        raise UserError(f"the {what} settings must be a mapping of names to values, got {type(values).__name__}")
    known = {f.name for f in fields(config_class)}
    unknown = set(values) - known
    if unknown:
        raise UserError(f"unknown {what} setting(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")
    hints = _hints(config_class)
    for name, value in values.items():
        annotation = hints.get(name)
        if annotation is None or (is_dataclass(annotation) and isinstance(value, dict)):
            continue
        if _accepts(annotation, value) is False:
            raise UserError(
                f"{what} setting {name!r} must be {_describe(annotation)}, got {value!r} ({type(value).__name__})"
            )


ConfigT = typing.TypeVar("ConfigT")


def load_section(config_class: type[ConfigT], values: typing.Mapping, what: str) -> ConfigT:
    """A config dataclass from a YAML mapping: unknown keys and wrong types named (reject_unknown),
    lists made tuples where the field is a tuple, nested config mappings loaded by their class's
    own `from_dict` (which may add checks of its own) or by this function."""
    reject_unknown(config_class, dict(values) if isinstance(values, typing.Mapping) else values, what)
    hints = _hints(typing.cast(type, config_class))
    loaded: dict[str, typing.Any] = {}
    for name, value in values.items():
        annotation = hints.get(name)
        nested = _nested_config(annotation)
        if nested is not None and isinstance(value, dict):
            from_dict = getattr(nested, "from_dict", None)
            value = from_dict(value) if from_dict is not None else load_section(nested, value, name)
        elif isinstance(value, list) and _is_tuple(annotation):
            value = tuple(value)
        loaded[name] = value
    return config_class(**loaded)


def _nested_config(annotation) -> type | None:
    """The dataclass an annotation names (alone or with None), if any."""
    arms = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    for arm in arms or (annotation,):
        if isinstance(arm, type) and is_dataclass(arm):
            return arm
    return None


def _is_tuple(annotation) -> bool:
    arms = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    return any(arm is tuple or typing.get_origin(arm) is tuple for arm in arms or (annotation,))


def load_yaml(text: str):
    """yaml.safe_load, except that numbers such as 1e-3 or 3e5 are numbers: PyYAML follows YAML
    1.1, where a float needs a dot ("1.0e-3"), and would hand back the string "1e-3"."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
            r"|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+0123456789."),
    )
    # Integers stay integers: the int resolver (registered first) matches plain digits before this one.
    return yaml.load(text, Loader=Loader)


def plain(value):
    """A config as YAML/JSON-ready values (dataclasses to mappings, tuples and sets to lists)."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return str(value)
    return value


def stage_key(name: str, *parts) -> str:
    """A stage's identity: its name, codemill's version, its config and its inputs' keys. Equal keys
    mean the stage would write the same output, so a finished one is reused."""
    from codemill import __version__

    blob = json.dumps([name, __version__, [plain(p) for p in parts]], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@lru_cache(maxsize=None)
def field_docs(config_class: type) -> dict[str, str]:
    """Each field's documentation: the comment on its line in the class body, where the configs
    document their fields (read from the source, so the docs live once, beside the field). Empty
    when the source is not available."""
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    try:
        source = inspect.getsource(config_class)
    except (OSError, TypeError):
        return {}
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    tree = ast.parse(textwrap.dedent(source))
    docs: dict[str, str] = {}
    for node in tree.body[0].body:  # type: ignore[attr-defined]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            comment = comments.get(node.end_lineno or node.lineno)
            if comment:
                docs[node.target.id] = comment
    return docs
