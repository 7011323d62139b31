"""A preset's published figures: the table of the paper it reproduces, quoted with where it is printed. The run copies
the block into metrics.json (`reference`); the report prints, beside each method's own figures, the paper's and the
difference ours − paper.

    reference:
      source: "Marczak et al. 2025, Iso-CTS (ICML), Table 1, ViT-B/32, 8 tasks"   # where the figures are printed
      note: null          # free text: figures that could not be verified, ± values, protocol differences
      figures:            # experiment_name -> metrics.json key -> figure as a fraction in [0, 1]
        task_arithmetic: {test/acc_task_mean: 0.708}
        theta0: {test/acc_task_mean: 0.483}   # `theta0`: the report's θ0 row (a pretrained backbone's zero-shot)
"""

import dataclasses
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

from music.errors import ConfigError
from music.settings import check_group, is_number

THETA0 = "theta0"  # the name under which `figures` gives the θ0 row's (the report's experiment for that row)
EXAMPLE = "e.g. {ties: {test/acc_task_mean: 0.724}}"


@dataclasses.dataclass
class Reference:
    """The `reference` root setting (null: the run reproduces no paper's table)."""

    source: str  # the paper, its table and the setting the figures are for
    note: str | None = None  # what could not be verified, ± values, where the protocol differs
    figures: dict = dataclasses.field(default_factory=dict)  # experiment_name -> {metrics.json key: fraction in [0, 1]}


FIELDS = [field.name for field in dataclasses.fields(Reference)]


def _shown(value):
    return OmegaConf.to_container(value) if isinstance(value, DictConfig) else value


def check_reference(node) -> None:
    """One line naming the first thing wrong with a `reference` block; nothing for null."""
    if node is None:
        return
    if not isinstance(node, Mapping):
        raise ConfigError("reference", _shown(node), f"null or a mapping with keys {', '.join(FIELDS)}")
    for key in node:
        if key not in FIELDS:
            raise ConfigError(f"reference.{key}", _shown(node[key]), f"no such key: reference has {', '.join(FIELDS)}")
    source = node.get("source")
    if not isinstance(source, str) or not source.strip():
        allowed = "a non-empty string saying where the figures are printed (paper, table, backbone)"
        raise ConfigError("reference.source", _shown(source), allowed)
    check_group("reference", node, Reference)  # the other types: note a string or null, figures a mapping
    figures = node.get("figures")
    if not figures:
        allowed = f"a non-empty mapping experiment_name -> {{metrics.json key: figure in [0, 1]}}, {EXAMPLE}"
        raise ConfigError("reference.figures", _shown(figures), allowed)
    for experiment, metrics in figures.items():
        where = f"reference.figures.{experiment}"
        if not isinstance(experiment, str):
            raise ConfigError(where, _shown(metrics), "keyed by an experiment name (a string)")
        if not isinstance(metrics, Mapping) or not metrics:
            raise ConfigError(where, _shown(metrics), f"a non-empty mapping metrics.json key -> figure, {EXAMPLE}")
        for metric, value in metrics.items():
            if not isinstance(metric, str):
                raise ConfigError(f"{where}.{metric}", value, "keyed by a metrics.json key such as test/acc_task_mean")
            if not (is_number(value) and 0 <= value <= 1):
                # a percentage is the likely slip: the run's own figures are fractions
                hint = f" (a fraction: {value}% is {value / 100:g})" if is_number(value) and 1 < value <= 100 else ""
                raise ConfigError(f"{where}.{metric}", _shown(value), f"a number in [0, 1]{hint}")


def reference_of(runs: list[dict]) -> dict | None:
    """The reference block the first of `runs` carries (a preset's runs all carry the same), or None."""
    return next((run["reference"] for run in runs if run.get("reference")), None)


def figures_of(runs: list[dict], experiment: str) -> dict[str, float]:
    """{metrics.json key: the paper's figure} the runs' reference gives for `experiment` ({} where it gives none)."""
    reference = reference_of(runs) or {}
    return dict((reference.get("figures") or {}).get(experiment) or {})
