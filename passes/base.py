"""The pass protocol: an onnx_ir in-place pass that is also a frozen dataclass of options.

A pass's fields are its options, so ``FoldConstants(max_output_elements=4096)`` is both the
pass and its configuration; ``spec()`` writes it back as the pipeline string that makes it.
Statistics and notes (what a pass could not handle, and why) come back on ``PassStats``.

Options are typed: a ``Literal`` is a choice, ``tuple[str, ...]`` a list (``'Conv,MatMul'``
in a pipeline string, an array in TOML, a tuple or a comma string from Python). However a
pass is made, its choices are checked once, here, with one message form.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import onnx_ir as ir

from onnxpress.errors import BadInputError


@dataclasses.dataclass
class PassStats(ir.passes.PassResult):
    """A PassResult with counters (``stats``) and human-readable ``notes``."""

    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Pass(ir.passes.InPlacePass):
    """Base of every onnxpress pass. Subclasses are ``@dataclass(frozen=True)`` too, set
    ``name`` (as the CLI spells it) and implement ``call``."""

    name: ClassVar[str] = ""
    #: whether the pass handles If/Loop/Scan bodies; where not, the manager's report says how
    #: many nodes it did not visit
    visits_subgraphs: ClassVar[bool] = False
    #: old option name -> new, still read from pipelines and configs (with a warning)
    renamed: ClassVar[Mapping[str, str]] = {}

    def __post_init__(self) -> None:
        """Lists given as comma strings or lists become tuples (hashable, like the rest of a
        frozen pass); every choice is one of its Literal's.
        A subclass that checks more calls this first."""
        hints = option_types(type(self))
        for field in dataclasses.fields(self):
            if not field.init or field.name not in hints:
                continue
            value = getattr(self, field.name)
            hint = hints[field.name]
            if _is_list(hint) and isinstance(value, (str, list)):
                value = split_list(value) if isinstance(value, str) else tuple(value)
                object.__setattr__(self, field.name, value)
            where = f"{self.name}({field.name}={_format(value)})"
            _check_choice(where, value, hint)
            _check_number(where, field.name, value)

    def spec(self) -> str:
        """The pipeline string for this pass: the name, then options that differ from
        their defaults."""
        changed = [
            f"{field.name}={_format(getattr(self, field.name))}"
            for field in dataclasses.fields(self)
            if field.init and field.metadata.get("spec", True)
            and getattr(self, field.name) != _default(field)
        ]
        return f"{self.name}({','.join(changed)})" if changed else self.name


def data_field() -> Any:
    """The ``data`` field of a pass that needs sample inputs (calibration, sensitivity):
    ``PassManager`` fills it from ``--calibration`` when it is left None, and it is never
    written into the pipeline string (data is not an option)."""
    return dataclasses.field(default=None, compare=False, repr=False,
                             metadata={"spec": False, "data": True})


def with_data(current: Pass, data: Any) -> Pass:
    """``current`` with its data field set to ``data``, when it has one that is still None."""
    for field in dataclasses.fields(current):
        if field.metadata.get("data") and getattr(current, field.name) is None:
            return dataclasses.replace(current, **{field.name: data})
    return current


def passes_field(option: str) -> Any:
    """A field holding the passes that the pipeline option ``option`` (a string, as the user
    writes it) names. ``PassManager`` builds them with its own registry, presets and data,
    so a pass that composes others never parses a pipeline itself; not part of the spec."""
    return dataclasses.field(default=(), compare=False, repr=False,
                             metadata={"spec": False, "passes_of": option})


def with_passes(current: Pass, build: Callable[[str], Sequence[Pass]]) -> Pass:
    """``current`` with each of its pipeline options built into passes by ``build``."""
    for field in dataclasses.fields(current):
        option = field.metadata.get("passes_of")
        if option and getattr(current, option) and not getattr(current, field.name):
            built = tuple(build(getattr(current, option)))
            current = dataclasses.replace(current, **{field.name: built})
    return current


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        text = ",".join(map(str, value))
        return f"'{text}'" if "," in text or not text else text
    return str(value)


@functools.cache
def option_types(cls: type) -> dict[str, Any]:
    """The declared type of each option of a pass class."""
    return typing.get_type_hints(cls)


def split_list(text: str) -> tuple[str, ...]:
    """``'Conv, MatMul,'`` -> ``('Conv', 'MatMul')``."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _is_list(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple


#: names of whole-number options that count or bound something, so are never negative
_COUNTS = re.compile(r"^(max|min)_|_(batches|rounds|elements|samples)$")


def _check_number(where: str, name: str, value: Any) -> None:
    """Numbers an option can mean: a true/false is not a count (``max_rounds=true``), NaN
    and infinity are no setting (``mask_value=nan``), and whole-number counts and limits are
    >= 0 (``max_rounds=-1``; a float such as ``lowrank(min_saving=-1)`` may mean "any")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInputError(f"{where}: give a finite number")
    if isinstance(value, int) and _COUNTS.search(name) and value < 0:
        raise BadInputError(f"{where}: give a number >= 0")


def _check_choice(where: str, value: Any, hint: Any) -> None:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return
        for option in typing.get_args(hint):
            if typing.get_origin(option) in (typing.Literal, tuple):
                _check_choice(where, value, option)
        return
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise BadInputError(f"{where}: {value!r} is not one of "
                                f"{', '.join(map(str, choices))}")
    elif origin is tuple:
        if not isinstance(value, tuple):
            raise BadInputError(f"{where}: expected a list, got {value!r}")
        element = typing.get_args(hint)[0]
        for item in value:
            _check_choice(where, item, element)


def structure_signature(model: ir.Model) -> tuple:
    """A cheap fingerprint of the graph's structure (ops, wiring, initializer set), used to
    tell whether a wrapped third-party pass really changed something."""
    nodes = tuple(
        (node.op_type, node.domain, tuple(id(v) for v in node.inputs), len(node.attributes))
        for node in model.graph.all_nodes()
    )
    initializers = tuple(
        id(v.const_value) for g in (model.graph, *model.graph.subgraphs())
        for v in g.initializers.values()
    )
    outputs = tuple(id(v) for v in model.graph.outputs)
    return nodes, initializers, outputs
