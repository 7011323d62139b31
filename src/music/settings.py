"""Settings declared with their type and interval where the code reads them, and the one check of a value against
its declaration (before any work: one line naming the setting and what is allowed).

A declaration is a type: `bool`, `int`, `float`, `Literal["fresh", "carry"]`, `list[...]`, `X | None`; a number's
interval rides along as `Annotated[float, "(0, 1]"]` ("[0, inf)", "int"s included). A class built from config (a
network, a continual method) declares its settings in its constructor's signature; a config group that is read as
plain values declares them as a dataclass beside the code that reads it (`check_group`).
"""

import dataclasses
import importlib
import inspect
import types
import typing
from typing import Annotated, Literal, get_args, get_origin

from omegaconf import DictConfig, ListConfig

from music.errors import ConfigError

LISTS = (list, tuple, ListConfig)
HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")  # read by Hydra's instantiate
Positive = Annotated[int, "[1, inf)"]  # a count, a size, a width


def shown(value):
    """A setting's value as the user wrote it (nested lists, not ListConfig), for messages."""
    return list(map(shown, value)) if isinstance(value, LISTS) else value


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def in_interval(value, interval: str) -> bool:
    """Whether a number lies in an interval written like "(0, 1]" or "[0, inf)" (NaN lies in none)."""
    low, high = (float(x) for x in interval[1:-1].split(","))
    return (low <= value if interval[0] == "[" else low < value) and (
        value <= high if interval[-1] == "]" else value < high
    )


def _parts(declared) -> tuple[object, str | None]:
    """(the type, its interval or None) of a declaration."""
    if get_origin(declared) is Annotated:
        kind, *extras = get_args(declared)
        return kind, next((e for e in extras if isinstance(e, str)), None)
    return declared, None


def fits(value, declared) -> bool:
    kind, interval = _parts(declared)
    origin, args = get_origin(kind), get_args(kind)
    if origin in (types.UnionType, typing.Union):
        return any(fits(value, a) for a in args)
    if kind is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if origin in (list, tuple):
        return isinstance(value, LISTS) and all(fits(v, args[0]) for v in value)
    if kind is bool:
        return isinstance(value, bool)
    if kind is dict:
        return isinstance(value, (dict, DictConfig))
    number = is_int(value) if kind is int else is_number(value) if kind is float else isinstance(value, kind)
    return number and (interval is None or in_interval(value, interval))


def allowed(declared) -> str:
    """What a declaration allows, in words: "an integer in [1, inf)", "a list of numbers in (0, 1]", "one of a, b"."""
    kind, interval = _parts(declared)
    origin, args = get_origin(kind), get_args(kind)
    if origin in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else allowed(a) for a in args)
    if origin is Literal:
        return f"one of {', '.join(map(str, args))}"
    if origin in (list, tuple):
        inner = allowed(args[0])
        plural = {
            "an integer": "integers",
            "a finite number": "finite numbers",
            "a number": "numbers",
            "true or false": "booleans",
            "a str": "strings",
        }
        return "a list of " + next(
            (inner.replace(one, many) for one, many in plural.items() if inner.startswith(one)), inner
        )
    if kind is bool:
        return "true or false"
    if kind is float and interval == "(-inf, inf)":
        return "a finite number"
    what = {int: "an integer", float: "a number"}.get(kind, f"a {getattr(kind, '__name__', kind)}")
    return f"{what} in {interval}" if interval else what


def check(setting: str, value, declared) -> None:
    if not fits(value, declared):
        raise ConfigError(setting, shown(value), allowed(declared))


def check_grid(setting: str, values, declared) -> None:
    """A search grid: a non-empty list of values each as `declared`."""
    if not isinstance(values, LISTS) or not values or not fits(values, list[declared]):
        raise ConfigError(setting, shown(values), f"a non-empty {allowed(list[declared]).removeprefix('a ')}")


def located(path) -> object | None:
    """What an import path (a `_target_`: module.name) names, or None where nothing is importable under it."""
    module, _, name = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, ValueError, AttributeError):
        return None


def declared_settings(target) -> dict[str, object]:
    """The settings a class or function declares in its signature: {argument: its annotation}. `target` may be the
    object or its import path (a `_target_`); one that is not importable declares nothing (instantiation says so)."""
    if isinstance(target, str):
        target = located(target)
        if target is None:
            return {}
    function = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except (NameError, TypeError):  # annotations it cannot resolve here: left to the target's own checks
        return {}
    return {k: v for k, v in hints.items() if k != "return"}


def check_declared(setting: str, node: DictConfig) -> None:
    """Each argument of a Hydra node (`_target_` and its arguments) against what its target's signature declares.
    Arguments it does not declare are left to the target's own signature (instantiation names the one it refuses)."""
    declared = declared_settings(str(node.get("_target_")))
    for key, value in node.items():
        if key in declared:
            check(f"{setting}.{key}", value, declared[key])


def check_known(setting: str, node: DictConfig, known) -> None:
    """Every key of a group is one its code declares: a key nothing reads (`+model.foo=1`, a misspelling) would be
    silently ignored, so it is refused, listing the group's settings."""
    for key in node:
        if key not in known:
            names = ", ".join(sorted(k for k in known if k not in HYDRA_KEYS))
            raise ConfigError(
                f"{setting}.{key}", shown(node.get(key)), f"no code reads it ({setting}'s settings: {names})"
            )


def check_group(setting: str, node: DictConfig, schema: type, also=()) -> None:
    """A config group read as plain values against its dataclass `schema`: every field the node has, as declared, and
    no key beyond the fields and `also` (the group's keys checked elsewhere, e.g. an optimizer built to check it)."""
    hints = typing.get_type_hints(schema, include_extras=True)
    for spec in dataclasses.fields(schema):
        if spec.name in node:
            check(f"{setting}.{spec.name}", node.get(spec.name), hints[spec.name])
    check_known(setting, node, [spec.name for spec in dataclasses.fields(schema)] + list(also))
