"""The merge methods in one table: for each, how it merges, its knobs (each with the interval it is allowed in; its
search grid is `merge.<knob>` in configs/merge/<name>.yaml), the per-task statistics it estimates first, and the two
labels the report prints: the data the merge step reads, and whether it needs each test image's task id.

Config validation, the validation search (strategies/merging.py) and the report read this table; adding a method is
its kernel, one entry here and its config file.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

import torch
from torch import Tensor

from music.merging import adamerging, kernels, masks, spectral
from music.merging.task_vector import TaskVector

DATA = ("none", "unlabeled", "labeled")  # what a merge step reads beyond the task vectors


@dataclass(frozen=True)
class MergeInputs:
    """What a method merges: the task vectors (also stacked T×P), its statistics, its options, seeded generators."""

    vectors: list[TaskVector]
    tau: Tensor
    stats: Any = None
    options: dict = field(default_factory=dict)  # settings that are not searched (DARE's base, AdaMerging's steps, …)
    seeded: Callable[[str], torch.Generator] = lambda purpose: torch.Generator().manual_seed(0)

    def unflatten(self, flat: Tensor) -> TaskVector:
        return self.vectors[0].unflatten(flat)

    def sizes(self, rows: bool = False) -> list[int]:
        """The flat layout's segments: each parameter, or (rows) each output unit's row of each weight (a conv weight's
        row is its in·kh·kw inputs, as `layerwise` flattens it; a 1-D parameter is one segment)."""
        deltas = self.vectors[0].deltas.values()
        return [
            n
            for d in deltas
            for n in ([d.numel() // d.shape[0]] * d.shape[0] if rows and d.dim() >= 2 else [d.numel()])
        ]


Merged = TaskVector | list[TaskVector]  # one direction, or one per task (task id at test)


@dataclass(frozen=True)
class Method:
    merge: Callable[[MergeInputs, dict], Merged]  # (inputs, knob values) -> direction(s); θ = θ0 + λ·direction
    paper: str
    knobs: dict[str, str] = field(default_factory=dict)  # knob -> the interval its grid's values lie in, e.g. "(0, 1]"
    # settings that are not searched -> their types (music.settings), e.g. Annotated[int, "[1, 1000]"]
    options: dict[str, Any] = field(default_factory=dict)
    # estimated per task before merging, by name (merging.gather.STATISTICS): "fisher", "grams", "entropy"
    statistics: str | None = None
    data: str = "none"
    task_id: bool = False
    # whose task vectors: the per-task fine-tunes, or (sequential) θ_t − θ0 of the sequential stages
    vectors: str = "individual"
    # the coordinates it keeps at the picked knobs (T×P, the rest zero), where sign conflicts are counted among them
    kept: Callable[[Tensor, dict], Tensor] | None = None


def flat(kernel: Callable[..., Tensor]) -> Callable[[MergeInputs, dict], TaskVector]:
    """A kernel over the stacked T×P task vectors, called with the knobs by name."""
    return lambda inputs, knobs: inputs.unflatten(kernel(inputs.tau, **knobs))


def layerwise(
    matrix: Callable[..., Tensor], vector: Callable[[Tensor], Tensor]
) -> Callable[[MergeInputs, dict], TaskVector]:
    """A kernel over one weight's stacked task deltas (T×m×n; a conv weight as T×out×(in·kh·kw)), called with the knobs
    by name, and one for the other parameters (T×n: biases and the like)."""

    def merge(inputs: MergeInputs, knobs: dict) -> TaskVector:
        deltas = {}
        for name in inputs.vectors[0].deltas:
            stacked = torch.stack([v.deltas[name] for v in inputs.vectors])
            deltas[name] = (
                matrix(stacked.flatten(2), **knobs).view_as(stacked[0]) if stacked.dim() >= 3 else vector(stacked)
            )
        return TaskVector(deltas)

    return merge


def per_task(kernel: Callable[[MergeInputs, dict], Tensor]) -> Callable[[MergeInputs, dict], list[TaskVector]]:
    """A kernel giving one row per task (T×P): task t's model is θ0 + λ·row t (needs the task id at test)."""
    return lambda inputs, knobs: [inputs.unflatten(row) for row in kernel(inputs, knobs)]


DARE_BASES = ("task_arithmetic", "ties")
ADAMERGING_OPTIONS = {
    "steps": Annotated[int, "[1, 100000]"],
    "lr": Annotated[float, "(0, 10]"],
    "prior": Annotated[float, "[0, 1]"],
    "batch_size": Annotated[int, "[1, 100000]"],
}


def _trimmed(tau: Tensor, knobs: dict) -> Tensor:
    """TIES's trim at the picked keep_fraction (DARE over TIES has one; over task arithmetic it keeps everything)."""
    return kernels.trim(tau, knobs["keep_fraction"]) if "keep_fraction" in knobs else tau


def _dare(inputs: MergeInputs, knobs: dict) -> TaskVector:
    base = METHODS[inputs.options["base"]]
    dropped = kernels.dare(inputs.tau, knobs["p"], inputs.seeded(f"dare/p={knobs['p']}"))
    return base.merge(replace(inputs, tau=dropped), {k: v for k, v in knobs.items() if k in base.knobs})


def _adamerging(layerwise: bool) -> Callable[[MergeInputs, dict], TaskVector]:
    def merge(inputs: MergeInputs, knobs: dict) -> TaskVector:
        data, options = inputs.stats, inputs.options
        coefficients, _ = adamerging.adamerging(
            data.theta0,
            inputs.vectors,
            data.logits,
            data.images,
            layerwise,
            inputs.seeded("adamerging"),
            steps=options["steps"],
            lr=options["lr"],
            prior=options["prior"],
            batch_size=options["batch_size"],
        )
        return adamerging.weighted_sum(inputs.vectors, coefficients)

    return merge


METHODS: dict[str, Method] = {
    "task_arithmetic": Method(flat(kernels.task_arithmetic), "Ilharco et al., ICLR 2023"),
    "average": Method(flat(kernels.average), "Wortsman et al., ICML 2022 (uniform soup)"),
    "ties": Method(flat(kernels.ties), "Yadav et al., NeurIPS 2023", knobs={"keep_fraction": "(0, 1]"}, kept=_trimmed),
    "dare": Method(_dare, "Yu et al., ICML 2024", knobs={"p": "[0, 1)"}, kept=_trimmed),
    "fisher": Method(
        lambda inputs, knobs: inputs.unflatten(kernels.fisher_weighted(inputs.tau, inputs.stats)),
        "Matena & Raffel, NeurIPS 2022",
        statistics="fisher",
        data="unlabeled",
    ),
    "regmean": Method(
        lambda inputs, knobs: kernels.regmean(inputs.vectors, inputs.stats, knobs["alpha"]),
        "Jin et al., ICLR 2023",
        knobs={"alpha": "[0, 1]"},
        statistics="grams",
        data="unlabeled",
    ),
    "tsv": Method(layerwise(spectral.tsv_merge, spectral.tsv_merge_vector), "Gargiulo et al., CVPR 2025 (TSV-Merge)"),
    "iso_c": Method(layerwise(spectral.iso_c, spectral.iso_vector), "Marczak et al., ICML 2025 (Iso-C)"),
    "iso_cts": Method(
        layerwise(spectral.iso_cts, spectral.iso_vector),
        "Marczak et al., ICML 2025 (Iso-CTS)",
        knobs={"common_fraction": "[0, 1]"},
    ),
    "wudi": Method(layerwise(spectral.wudi, spectral.wudi_vector), "Cheng et al., ICML 2025 (WUDI-merging)"),
    "consensus": Method(
        lambda inputs, knobs: inputs.unflatten(
            masks.consensus(inputs.tau, knobs["mask_lambda"], k=inputs.options["k"])
        ),
        "Wang et al., ICML 2024 (Consensus TA)",
        knobs={"mask_lambda": "[0, 10]"},
        options={"k": Annotated[int, "[1, 1000]"]},
    ),
    "tall_masks": Method(
        per_task(lambda inputs, knobs: masks.tall_task_vectors(inputs.tau, knobs["mask_lambda"])),
        "Wang et al., ICML 2024 (TALL masks)",
        knobs={"mask_lambda": "[0, 10]"},
        task_id=True,
    ),
    "emr": Method(
        per_task(lambda inputs, knobs: masks.emr_task_vectors(inputs.tau, inputs.sizes())),
        "Huang et al., NeurIPS 2024 (EMR-Merging)",
        task_id=True,
    ),
    "pcb": Method(flat(masks.pcb), "Du et al., NeurIPS 2024 (PCB-merging)", knobs={"ratio": "(0, 1]"}),
    "breadcrumbs": Method(
        lambda inputs, knobs: inputs.unflatten(
            masks.breadcrumbs(inputs.tau, **knobs, sizes=inputs.sizes(rows=True)).sum(dim=0)
        ),
        "Davari & Belilovsky, ECCV 2024 (Model Breadcrumbs)",
        knobs={"keep_fraction": "(0, 1]", "drop_top_fraction": "[0, 1)"},
    ),
    "magmax": Method(flat(kernels.max_magnitude), "Marczak et al., ECCV 2024 (MagMax)", vectors="sequential"),
    "adamerging": Method(
        _adamerging(layerwise=True),
        "Yang et al., ICLR 2024 (layer-wise)",
        statistics="entropy",
        data="unlabeled",
        options=ADAMERGING_OPTIONS,
    ),
    "adamerging_taskwise": Method(
        _adamerging(layerwise=False),
        "Yang et al., ICLR 2024 (task-wise)",
        statistics="entropy",
        data="unlabeled",
        options=ADAMERGING_OPTIONS,
    ),
}


def knob_names(method: str, base: str | None = None) -> list[str]:
    """The knobs a method searches besides λ (DARE adds its base method's)."""
    names = list(METHODS[method].knobs)
    if method == "dare":
        names += list(METHODS[base].knobs)
    return names


def knob_interval(method: str, base: str | None, knob: str) -> str:
    return METHODS[method].knobs.get(knob) or METHODS[base].knobs[knob]
