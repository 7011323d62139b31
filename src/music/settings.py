"""How a component declares its settings, next to the code that reads them, and the one check of a value against
its declaration (before any work: one line naming the setting and what is allowed).

A declaration is a short string: `"bool"`; an interval a number lies in, `"(0, 1]"`, `"[0, inf)"`; `"int [1, inf)"`,
an integer in it; `"list int [1, inf)"`, a list of such. A class built from config (a network, a continual method)
declares its constructor's settings as `SETTINGS = {name: declaration}`; the merge method table declares its knobs
and options in the same words.
"""

import importlib

from omegaconf import DictConfig, ListConfig

from music.errors import ConfigError


def shown(value):
    """A setting's value as the user wrote it (nested lists, not ListConfig), for messages."""
    return list(map(shown, value)) if isinstance(value, (list, tuple, ListConfig)) else value


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


def fits(value, declaration: str) -> bool:
    if declaration.startswith("list "):
        return isinstance(value, (list, tuple, ListConfig)) and all(
            fits(v, declaration.removeprefix("list ")) for v in value
        )
    if declaration == "bool":
        return isinstance(value, bool)
    integer = declaration.startswith("int ")
    return (is_int(value) if integer else is_number(value)) and in_interval(value, declaration.removeprefix("int "))


def allowed(declaration: str) -> str:
    """What a declaration allows, in words: "an integer in [1, inf)", "a list of numbers in (0, 1]", "true or false"."""
    if declaration.startswith("list "):
        inner = allowed(declaration.removeprefix("list "))
        return "a list of " + inner.replace("an integer", "integers").replace("a number", "numbers").replace(
            "true or false", "booleans"
        )
    if declaration == "bool":
        return "true or false"
    return f"{'an integer' if declaration.startswith('int ') else 'a number'} in {declaration.removeprefix('int ')}"


def check(setting: str, value, declaration: str) -> None:
    if not fits(value, declaration):
        raise ConfigError(setting, shown(value), allowed(declaration))


def check_grid(setting: str, values, interval: str) -> None:
    """A search grid: a non-empty list of numbers in `interval`."""
    if not isinstance(values, (list, ListConfig)) or not values or not fits(values, f"list {interval}"):
        raise ConfigError(setting, shown(values), f"a non-empty list of numbers in {interval}")


def declared_settings(target: str) -> dict[str, str]:
    """The SETTINGS a `_target_` (a class or function's import path) declares; {} for one that declares none."""
    module, _, name = target.rpartition(".")
    try:
        return getattr(getattr(importlib.import_module(module), name), "SETTINGS", {})
    except (ImportError, ValueError, AttributeError):  # not importable: instantiation says so, naming `_target_`
        return {}


def check_declared(setting: str, node: DictConfig) -> None:
    """Each argument of a Hydra node (`_target_` and its arguments) against what its target declares. Arguments it
    does not declare are left to the target's own signature (instantiation names the one it refuses)."""
    declared = declared_settings(str(node.get("_target_")))
    for key, value in node.items():
        if key in declared:
            check(f"{setting}.{key}", value, declared[key])
