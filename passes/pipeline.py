"""Pipeline strings and TOML configs -> pass instances, and back.

Grammar: ``pipeline := item ("," item)*``, ``item := name | name "(" key "=" value
("," key "=" value)* ")"``. Values are converted to the option's declared type
(int, float, bool as true/false/1/0/yes/no, str, Literal choices, ``X | None``, lists as
``tuple[X, ...]``); a float may be written as a percentage, ``0.5%`` = 0.005. A value holding
commas is quoted: ``quantize(ops='Conv,MatMul')``. An option a pass renamed is still read,
with a warning.
"""

from __future__ import annotations

import dataclasses
import logging
import tomllib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onnxpress.errors import BadInputError
from onnxpress.passes.base import Pass, option_types, split_list
from onnxpress.passes.registry import DEFAULT_TARGET, PassRegistry

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PassSpec:
    name: str
    params: dict[str, Any]


def split_pipeline(text: str) -> list[PassSpec]:
    """Parse a pipeline string into names and raw (string) parameters."""
    specs: list[PassSpec] = []
    for item in _split_top_level(text, ","):
        item = item.strip()
        if not item:
            continue
        name, _, rest = item.partition("(")
        name = name.strip()
        params: dict[str, Any] = {}
        if rest:
            if not rest.rstrip().endswith(")"):
                raise BadInputError(f"pipeline item {item!r} lacks its closing ')'")
            for pair in _split_top_level(rest.rstrip()[:-1], ","):
                if not pair.strip():
                    continue
                key, eq, value = pair.partition("=")
                if not eq:
                    raise BadInputError(f"option {pair.strip()!r} of {name!r} needs key=value")
                if key.strip() in params:
                    raise BadInputError(f"option {key.strip()!r} of {name!r} is given twice")
                params[key.strip()] = value.strip().strip("'\"")
        specs.append(PassSpec(name, params))
    if not specs:
        raise BadInputError("the pipeline is empty; name at least one pass, e.g. 'cleanup'")
    return specs


def _split_top_level(text: str, sep: str) -> list[str]:
    parts, depth, current, quote = [], 0, [], ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == sep and depth == 0 and not quote:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise BadInputError(f"unbalanced brackets in pipeline {text!r}")
    parts.append("".join(current))
    return parts


def build(specs: Sequence[PassSpec], registry: PassRegistry) -> list[Pass]:
    return [instantiate(registry.get(spec.name), spec.params) for spec in specs]


def parse_pipeline(text: str, registry: PassRegistry | None = None,
                   target: str | None = None) -> list[Pass]:
    """``"cleanup,fold-constants(max_output_elements=1024)"`` -> pass instances; a preset
    in it expands to ``target``'s form."""
    registry = registry or PassRegistry.default()
    return build(expand_presets(split_pipeline(text), registry, target), registry)


def expand_presets(specs: Sequence[PassSpec], registry: PassRegistry,
                   target: str | None = None) -> list[PassSpec]:
    """Each preset among ``specs`` replaced by its pipeline for ``target``; options given
    to a preset go to its main pass."""
    target = target or DEFAULT_TARGET
    expanded: list[PassSpec] = []
    for spec in specs:
        if spec.name not in registry.presets:
            expanded.append(spec)
            continue
        main, pipelines = registry.presets[spec.name]
        if target not in pipelines:
            raise BadInputError(f"preset {spec.name!r} has no pipeline for target {target!r}; "
                                f"targets: {', '.join(pipelines)}")
        for inner in split_pipeline(pipelines[target]):
            params = {**inner.params, **spec.params} if inner.name == main else inner.params
            expanded.append(PassSpec(inner.name, params))
    return expanded


def format_pipeline(passes: Sequence[Pass]) -> str:
    return ",".join(p.spec() for p in passes)


def instantiate(cls: type[Pass], params: dict[str, Any]) -> Pass:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = option_types(cls)
    kwargs = {}
    for key, raw in params.items():
        if key in cls.renamed:
            logger.warning("%s(%s=...) is now %s(%s=...)", cls.name, key, cls.name,
                           cls.renamed[key])
            key = cls.renamed[key]
        if key in kwargs:
            raise BadInputError(f"pass {cls.name!r}: option {key!r} given twice")
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise BadInputError(f"pass {cls.name!r} has no option {key!r} (options: {known})")
        kwargs[key] = _convert(raw, hints[key], f"{cls.name}({key}={raw})")
    return cls(**kwargs)


def _convert(raw: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if type(None) in options and str(raw).lower() in ("none", "null", ""):
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(raw, option, where)
            except BadInputError as error:
                errors.append(str(error))
        raise BadInputError(errors[0] if errors else f"{where}: cannot read {raw!r}")
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if raw in choices:
            return raw
        raise BadInputError(f"{where}: {raw!r} is not one of {', '.join(map(str, choices))}")
    if origin is tuple:
        items = split_list(raw) if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)):
            raise BadInputError(f"{where}: expected a list, got {raw!r}")
        return tuple(_convert(item, typing.get_args(hint)[0], where) for item in items)
    if not isinstance(raw, str):
        if hint is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, hint) and not (isinstance(raw, bool) and hint is not bool):
            return raw  # (a TOML true is an int to Python, not a count)
        raise BadInputError(f"{where}: expected {hint.__name__}, got {raw!r}")
    try:
        if hint is bool:
            lowered = raw.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is float and raw.endswith("%"):
            return float(raw[:-1]) / 100.0
        return hint(raw)
    except (TypeError, ValueError):
        name = getattr(hint, "__name__", str(hint))
        raise BadInputError(f"{where}: cannot read {raw!r} as {name}") from None


@dataclasses.dataclass(frozen=True)
class CompileConfig:
    """What a TOML config file may set; CLI flags given explicitly take precedence."""

    passes: list[PassSpec]
    check: bool = False
    verify: bool = True
    target: str | None = None
    calibration: str | None = None


def load_config(path: str | Path) -> CompileConfig:
    """Read a TOML config. ``passes`` is a pipeline string, a list of pipeline items, or an
    array of tables ``[[passes]] name = "tome" r = 13``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise BadInputError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError:
        raise BadInputError(f"{path}: not UTF-8 text, so not a TOML config") from None
    except OSError as error:
        raise BadInputError(f"{path}: cannot read the config ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise BadInputError(f"{path}: not valid TOML ({error})") from None
    except RecursionError:
        raise BadInputError(f"{path}: nested too deeply to be a config") from None
    unknown = set(data) - {"passes", "check", "verify", "target", "calibration"}
    if unknown:
        raise BadInputError(f"{path}: unknown key {sorted(unknown)[0]!r} in config")
    raw = data.get("passes", "cleanup")
    if isinstance(raw, str):
        specs = split_pipeline(raw)
    elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        specs = split_pipeline(",".join(raw))
    elif isinstance(raw, list) and all(isinstance(item, dict) for item in raw):
        specs = []
        for table in raw:
            if "name" not in table:
                raise BadInputError(f"{path}: a [[passes]] table lacks 'name'")
            params = {k: v for k, v in table.items() if k != "name"}
            specs.append(PassSpec(str(table["name"]), params))
    else:
        raise BadInputError(f"{path}: 'passes' must be a string, strings, or [[passes]] tables")
    for key, kind, name in (("check", bool, "true or false"), ("verify", bool, "true or false"),
                            ("target", str, "a target name"),
                            ("calibration", str, "a path")):
        if key in data and not isinstance(data[key], kind):
            raise BadInputError(f"{path}: {key!r} must be {name}, not {data[key]!r}")
    return CompileConfig(
        passes=specs,
        check=data.get("check", False),
        verify=data.get("verify", True),
        target=data.get("target"),
        calibration=data.get("calibration"),
    )
