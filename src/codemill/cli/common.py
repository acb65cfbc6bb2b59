"""What every command shares: option types that name the option in their errors, the output
switches (-v, -q, --log-level), logging, the version and reading a config file's section."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers such as 1,10, got {text!r}") from None
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"every value must be at least 1, got {text!r}")
    return values


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("codemill")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def add_output_options(parser: argparse.ArgumentParser, default) -> None:
    """-v / -q / --log-level, on the top parser and on every command (before or after its name)."""
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log progress details")
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="only errors: no progress bars, no warnings"
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default=default, help="logging threshold"
    )


def setup_logging(args: argparse.Namespace) -> None:
    level_name = getattr(args, "log_level", None) or (
        "info" if getattr(args, "verbose", False) else "error" if getattr(args, "quiet", False) else "warning"
    )
    level = getattr(logging, level_name.upper())
    if getattr(args, "quiet", False):
        os.environ["CODEMILL_PROGRESS"] = "0"
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # Beam warns at import about optional GCP clients we do not use (through the root logger).
    logging.getLogger("apache_beam").setLevel(level if level <= logging.INFO else logging.ERROR)
    logging.getLogger().addFilter(lambda record: not record.getMessage().startswith("apitools not found"))


def load_config_section(path: str | None, section_name: str, config_class, whole_file: bool = True):
    """The `section_name:` mapping of a YAML config file as `config_class` (the mapping itself when
    config_class is None). A run config (sections only) without that section gives its defaults; any
    other mapping is the section itself, unless `whole_file` is False (then: the defaults)."""
    from codemill.errors import UserError

    if path is None:
        return {} if config_class is None else config_class()
    import yaml

    from codemill.settings import load_yaml

    config_path = Path(path)
    try:
        data = load_yaml(config_path.read_text()) or {}
    except OSError as err:
        raise UserError(f"cannot read config {config_path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise UserError(f"config {config_path} is not valid YAML: {err}") from None
    from codemill.pipelines.run_config import SECTIONS

    is_run_config = isinstance(data, dict) and bool(data) and set(data) <= set(SECTIONS)
    fallback = {} if is_run_config or not whole_file else data
    section = data.get(section_name, fallback) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise UserError(f"config {config_path}: expected a mapping (optionally under '{section_name}:')")
    if config_class is None:
        return section
    try:
        if section_name == "curate":
            return config_class.from_dict(section, base_dir=config_path.parent)
        return config_class.from_dict(section)
    except (TypeError, ValueError) as err:
        raise UserError(f"config {config_path}: {err}") from None


STORAGE_OPTIONS_HELP = (
    "options for the fsspec filesystems of URL paths, as JSON: one object for every protocol "
    '(\'{"endpoint_url": "http://host:9000"}\') or one per protocol (\'{"s3": {...}}\')'
)


def _flag_type(annotation) -> tuple[type | None, tuple | None]:
    """(argparse type, choices) of a config field's annotation: Optional unwrapped, Literal as choices."""
    import types
    import typing

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        arms = [arm for arm in typing.get_args(annotation) if arm is not type(None)]
        annotation = arms[0] if len(arms) == 1 else str
    if typing.get_origin(annotation) is typing.Literal:
        return None, typing.get_args(annotation)
    return (annotation if annotation in (int, float, str) else str), None


def add_config_flags(
    parser: argparse.ArgumentParser, config_class: type, names: tuple[str, ...], defaults: object = None
) -> None:
    """`--name` options for fields of a config dataclass: the type and choices from the field's
    annotation, the help from its documentation (`settings.field_docs`) and its default (from
    `defaults`, an instance, when the command starts from other defaults than the class's: the
    run's). Each option defaults to None: a handler applies only what was given, over the config."""
    import dataclasses
    import typing

    from codemill.settings import field_docs

    hints = typing.get_type_hints(config_class)
    base = defaults if defaults is not None else config_class()
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(config_class)}
    docs = field_docs(config_class)
    for name in names:
        kind, choices = _flag_type(hints[name])
        default = values[name]
        doc = docs.get(name, name.replace("_", " "))
        shown = f"{default:g}" if isinstance(default, float) else default
        text = doc if default is None else f"{doc} (default: {shown})"  # a None default is in the doc
        flag = "--" + name.replace("_", "-")
        if kind is None:
            parser.add_argument(flag, choices=choices, help=text)
        else:
            parser.add_argument(flag, type=kind, help=text)


def config_changes(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The config fields given on the command line (the options `add_config_flags` made)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
