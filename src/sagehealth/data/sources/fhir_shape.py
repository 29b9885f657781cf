"""Fast structural validation of FHIR R4 JSON, compiled from the fhir.resources R4B models.

For every resource and data type the first use compiles, from the pydantic model of
``fhir.resources.R4B``, a table of its JSON elements: the JSON kind each must have (string,
boolean, integer, decimal, object of a named type, any resource), whether it is an array,
which elements are required and which choice elements (``value[x]``) exclude each other.
:func:`check` then walks a parsed resource against those tables: unknown elements, wrong JSON
types, arrays where one value belongs (and the reverse), missing required elements and two
choices of one ``[x]`` are reported with the path of the element. Value-level rules (date
formats, code values, regexes) are left to the mapping (dates are parsed there) or to
``--validate strict``, which runs the full pydantic models.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

STRING, BOOLEAN, INTEGER, DECIMAL, PRIMITIVE_EXT, ANY_RESOURCE, ANYTHING = "sbinxR*"
_PRIMITIVES: dict[type, str] = {
    str: STRING, bool: BOOLEAN, int: INTEGER, float: DECIMAL, decimal.Decimal: DECIMAL,
    _dt.date: STRING, _dt.datetime: STRING, _dt.time: STRING,
}
_KIND_NAMES = {STRING: "a string", BOOLEAN: "a boolean", INTEGER: "an integer",
               DECIMAL: "a number", PRIMITIVE_EXT: "an object"}


@dataclass(frozen=True, slots=True)
class Shape:
    """The JSON elements of one FHIR type."""

    name: str
    fields: dict[str, tuple[str, bool]]  # JSON name -> (kind or type name, is array)
    required: tuple[str, ...]
    choices: tuple[tuple[str, ...], ...]
    is_resource: bool


def _unwrap(ann: Any) -> tuple[Any, bool]:
    many = False
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Union or origin is types.UnionType:
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            lists = [a for a in args if typing.get_origin(a) in (list, typing.List)]  # noqa: UP006
            ann = lists[0] if lists else args[0]
        elif origin in (list, typing.List):  # noqa: UP006
            many = True
            ann = typing.get_args(ann)[0]
        elif origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
        else:
            return ann, many


def _kind(ann: Any) -> str:
    if ann in _PRIMITIVES:
        return _PRIMITIVES[ann]
    name = getattr(ann, "__name__", "")
    if name == "FHIRPrimitiveExtensionType":
        return PRIMITIVE_EXT
    if name in ("ResourceType", "DomainResourceType"):
        return ANY_RESOURCE
    if name.endswith("Type"):
        return name[: -len("Type")]
    return ANYTHING


@cache
def shape(type_name: str) -> Shape | None:
    """The compiled shape of an R4 resource or data type, or None when R4 has no such type."""
    from fhir.resources.R4B import get_fhir_model_class

    try:
        model = get_fhir_model_class(type_name)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None
    fields: dict[str, tuple[str, bool]] = {}
    required: list[str] = []
    groups: dict[str, list[str]] = {}
    for name, info in model.model_fields.items():
        alias = info.alias or name
        if name == "fhir_comments":
            fields[alias] = (ANYTHING, False)
            continue
        ann, many = _unwrap(info.annotation)
        kind = _kind(ann)
        if kind == PRIMITIVE_EXT:  # "_element": an Element, or an array of them (or nulls)
            fields[alias] = (PRIMITIVE_EXT, False)
            continue
        fields[alias] = (kind, many)
        extra = info.json_schema_extra or {}
        if isinstance(extra, dict):
            if info.is_required() or extra.get("element_required"):
                required.append(alias)
            if extra.get("one_of_many"):
                groups.setdefault(str(extra["one_of_many"]), []).append(alias)
    is_resource = "resourceType" not in fields and hasattr(model, "get_resource_type") and (
        "meta" in fields and "implicitRules" in fields
    )
    return Shape(type_name, fields, tuple(required),
                 tuple(tuple(v) for v in groups.values() if len(v) > 1), is_resource)


def _one(value: Any, kind: str) -> str | None:
    """Check one value against a kind; an error message relative to the value, or None."""
    if kind == STRING:
        return None if isinstance(value, str) else f": expected a string, got {_json_type(value)}"
    if kind == BOOLEAN:
        return None if value is True or value is False else f": expected a boolean, got {_json_type(value)}"
    if kind == INTEGER:
        return None if type(value) is int else f": expected an integer, got {_json_type(value)}"
    if kind == DECIMAL:
        t = type(value)
        return None if t is int or t is float else f": expected a number, got {_json_type(value)}"
    if kind == PRIMITIVE_EXT or kind == ANYTHING:
        return None
    if not isinstance(value, dict):
        return f": expected an object ({kind}), got {_json_type(value)}"
    if kind == ANY_RESOURCE:
        rtype = value.get("resourceType")
        if not isinstance(rtype, str):
            return ": contained resource without resourceType"
        kind = rtype
    return _check(value, kind)


_SHAPES: dict[str, Shape | None] = {}


def _check(obj: dict[str, Any], type_name: str) -> str | None:
    # The hot loop of validation: strings and nested objects are checked inline, everything
    # else goes through _one. Error paths are built only when there is an error.
    sh = _SHAPES.get(type_name)
    if sh is None:
        sh = _SHAPES[type_name] = shape(type_name)
        if sh is None:
            return f": unknown FHIR R4 type {type_name!r}"
    fields = sh.fields
    for key, value in obj.items():
        spec = fields.get(key)
        if spec is None:
            if key == "resourceType" and sh.is_resource:
                continue
            return f".{key}: unknown element of {type_name}"
        if value is None:
            continue
        kind, many = spec
        if many:
            if type(value) is not list:
                return f".{key}: expected an array, got {_json_type(value)}"
            if kind == STRING:
                for i, item in enumerate(value):
                    if type(item) is not str:
                        return f".{key}[{i}]: expected a string, got {_json_type(item)}"
                continue
            for i, item in enumerate(value):
                if type(item) is dict and len(kind) > 1:
                    err = _check(item, kind)
                else:
                    err = _one(item, kind)
                if err:
                    return f".{key}[{i}]{err}"
        elif kind == STRING:
            if type(value) is not str:
                return f".{key}: expected a single value, got an array" if type(value) is list else (
                    f".{key}: expected a string, got {_json_type(value)}")
        elif type(value) is list:
            if kind == PRIMITIVE_EXT:
                continue
            return f".{key}: expected a single value, got an array"
        else:
            err = _check(value, kind) if type(value) is dict and len(kind) > 1 else _one(value, kind)
            if err:
                return f".{key}{err}"
    for name in sh.required:
        if obj.get(name) is None and obj.get("_" + name) is None:
            return f".{name}: required element of {type_name} is missing"
    for group in sh.choices:
        present = [n for n in group if n in obj]
        if len(present) > 1:
            return f": only one of {', '.join(present)} is allowed"
    return None


def check(resource: dict[str, Any]) -> str | None:
    """Validate the structure of one resource; None when valid, else what is wrong and where."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return "missing resourceType"
    sh = shape(rtype)
    if sh is None or not sh.is_resource:
        return f"unknown FHIR R4 resource type {rtype!r}"
    err = _check(resource, rtype)
    return None if err is None else f"{rtype}{err}"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
