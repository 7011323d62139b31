"""The table: per setting and method, n seeds, mean and 95% CI of each metric, the paired difference to a baseline;
θ0 first, one row per θ0 setting. Pure."""

import math
import statistics
from collections import defaultdict

from scipy import stats

from music.reference import figures_of, reference_of
from music.report.runs import (
    FAMILIES,
    MISSING,
    family_of,
    labels_of,
    method_label,
    overrides_of,
    pretty_setting,
    setting_of,
    strategy_of,
    variants,
    varying_keys,
)

METRICS = ["test/acc", "test/acc_seen", "test/acc_unseen", "forgetting"]
TASK_MEAN = "test/acc_task_mean"  # the merging literature's figure: shown for per-task heads
# shown where some run of a setting has them (alignment's; the task mean with per-task heads)
OPTIONAL_METRICS = [
    TASK_MEAN,
    "test/acc_task_il",  # a shared head's runs scored over each image's own task too (Mammoth's task-IL column)
    "forgetting_task_il",
    "test/acc_before_align",
    "align/kl_before",
    "align/kl_after",
    "align/residual_orthogonal",
    "align/residual_lstsq",
]
BASELINE = "merged"  # the default experiment each row is paired with (--baseline)
COLLAPSED = "collapsed to θ0"
THETA0 = "θ0 (pretrained)"


def delta_key(baseline: str = BASELINE) -> str:
    return f"Δ test/acc vs {baseline}"


def t_interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% confidence interval (t distribution, n − 1 degrees of freedom)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    return t_interval(values) if values else (None, None)


def paper_key(metric: str) -> str:
    return f"{metric} paper"


def gap_key(metric: str) -> str:
    return f"{metric} − paper"


def paper_metrics(rows: list[dict]) -> list[str]:
    """The metrics some row has a paper's figure for, in the order the rows give them."""
    return list(dict.fromkeys(metric for row in rows for metric in row.get("paper", {})))


def _with_paper(row: dict, setting_runs: list[dict], own_runs: list[dict] | None) -> None:
    """The figures the setting's reference gives the row's experiment (`paper`), and per metric ours − paper with our
    95% CI (the paper's figure is a constant: the interval is ours). Every metric the reference gives some method gets
    our mean on every row: `own_runs` are the row's runs (None for θ0's row, whose figures are only those it was given)."""
    row["paper"] = figures_of(setting_runs, row["experiment"])
    reference = reference_of(setting_runs) or {}
    for metric in dict.fromkeys(m for figures in (reference.get("figures") or {}).values() for m in figures):
        if metric not in row:  # a metric the table does not compute otherwise
            values = [r[metric] for r in own_runs or [] if r.get(metric) is not None]
            row[metric], row[f"{metric} ci95"] = _stats(values)
    for metric, figure in row["paper"].items():
        ours, half = row[metric], row[f"{metric} ci95"]
        row[paper_key(metric)] = figure
        row[gap_key(metric)] = None if ours is None else ours - figure
        row[f"{gap_key(metric)} ci95"] = None if ours is None else half


def _paired(test_acc: dict[int, float], baseline: dict[int, dict], delta: str) -> dict:
    """The mean test-accuracy difference to the baseline's runs over the seeds both have, its CI, and their count."""
    paired = [test_acc[s] - baseline[s]["test/acc"] for s in sorted(set(test_acc) & set(baseline))]
    mean, half = _stats(paired)
    return {delta: mean, f"{delta} ci95": half, "paired seeds": len(paired)}


def _theta0_rows(setting: str, runs: list[dict], baseline: dict[int, dict] | None, delta: str) -> list[dict]:
    """One row per θ0 setting the runs started from (`theta0/setting`: θ0's cache key without the seed, so its seeds
    share a row; old runs: `theta0/key`), each named by the overrides that tell them apart (a sweep over θ0's own
    settings has several)."""
    groups = defaultdict(list)
    for run in runs:
        groups[run.get("theta0/setting", run.get("theta0/key"))].append(run)
    names = (
        variants([dict(r, experiment="theta0") for r in (members[0] for members in groups.values())])
        if len(groups) > 1
        else [()] * len(groups)
    )
    rows = [_theta0_row(setting, members, baseline, delta, name) for members, name in zip(groups.values(), names)]
    return [row for row in rows if row]


def _theta0_row(
    setting: str, runs: list[dict], baseline: dict[int, dict] | None, delta: str, variant: tuple = ()
) -> dict | None:
    """θ0's test accuracy per seed: `theta0/test/acc` of the runs, else the test/acc of `pretrain` runs."""
    by_seed = defaultdict(list)
    for run in runs:
        if run.get("theta0/test/acc") is not None:
            by_seed[run["seed"]].append(run["theta0/test/acc"])
    if not by_seed:
        for run in runs:
            if strategy_of(run) == "pretrain" and run.get("test/acc") is not None:
                by_seed[run["seed"]].append(run["test/acc"])
    if not by_seed:
        return None
    per_seed = {seed: statistics.fmean(v) for seed, v in by_seed.items()}  # the runs of a seed and key share θ0
    name = THETA0 if runs[0].get("theta0/source", "trained") != "random" else "θ0 (random init)"
    row = {
        "setting": setting,
        "pretty": pretty_setting(runs[0]),
        "method": method_label(name, variant),
        "experiment": "theta0",
        "variant": variant,
        "family": "θ0",
        "n": len(per_seed),
        "seeds": sorted(per_seed),
        COLLAPSED: None,
        "collapsed of": None,
        "data": "–",
        "task id at test": "no",
        "memory": "–",
    }
    for metric in METRICS + OPTIONAL_METRICS:
        row[metric], row[f"{metric} ci95"] = None, None
    row["test/acc"], row["test/acc ci95"] = t_interval(list(per_seed.values()))
    task_mean = {
        r["seed"]: r["theta0/test/acc_task_mean"] for r in runs if r.get("theta0/test/acc_task_mean") is not None
    }
    row[TASK_MEAN], row[f"{TASK_MEAN} ci95"] = _stats(list(task_mean.values()))  # the zero-shot figure papers give
    row |= _paired(per_seed, baseline or {}, delta)
    return row


def summarize(runs: list[dict], baseline: str = BASELINE) -> list[dict]:
    """One row per (setting, method): n seeds, mean and CI half-width of each metric, paired Δ vs `baseline`.

    A setting's rows start with θ0 (when the runs say what θ0 scored), then the families in FAMILIES order, each
    by name. A row's baseline is the `baseline` experiment's group of its setting that agrees with the row on the
    override keys varying among that experiment's runs; pairs are the seeds both have.
    """
    delta = delta_key(baseline)
    groups: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for run, variant in zip(runs, variants(runs)):
        if strategy_of(run) != "pretrain":  # θ0's own runs make the θ0 row
            groups[(setting_of(run), run["experiment"], variant)][run["seed"]] = (
                run  # one run per seed (the last found)
            )
    rows = []
    by_setting = defaultdict(list)
    for run in runs:
        by_setting[setting_of(run)].append(run)
    for setting, setting_runs in by_setting.items():
        merged = {key: by_seed for key, by_seed in groups.items() if key[0] == setting and key[1] == baseline}
        merged_keys = varying_keys([overrides_of(r) for by_seed in merged.values() for r in by_seed.values()])

        def baseline_of(by_seed: dict[int, dict]) -> dict[int, dict]:
            mine = overrides_of(next(iter(by_seed.values())))
            for other in merged.values():
                theirs = overrides_of(next(iter(other.values())))
                if all(mine.get(k, MISSING) == theirs.get(k, MISSING) for k in merged_keys):
                    return other
            return {}

        mine = _theta0_rows(setting, setting_runs, next(iter(merged.values())) if len(merged) == 1 else None, delta)
        for (where, experiment, variant), by_seed in groups.items():
            if where != setting:
                continue
            first = next(iter(by_seed.values()))
            row = {
                "setting": setting,
                "pretty": pretty_setting(first),
                "method": method_label(experiment, variant),
                "experiment": experiment,
                "variant": variant,
                "family": family_of(first),
                "n": len(by_seed),
                "seeds": sorted(by_seed),
            }
            row["data"], row["task id at test"] = labels_of(first)
            row["memory"] = first.get("continual/memory", "–")  # what a continual method keeps between stages
            for metric in METRICS + OPTIONAL_METRICS:
                row[metric], row[f"{metric} ci95"] = _stats(
                    [r[metric] for r in by_seed.values() if r.get(metric) is not None]
                )
            flags = [
                bool(r["merge/collapsed_to_theta0"])
                for r in by_seed.values()
                if r.get("merge/collapsed_to_theta0") is not None
            ]
            row[COLLAPSED], row["collapsed of"] = (sum(flags), len(flags)) if flags else (None, None)
            paired_with = baseline_of(by_seed) if experiment != baseline else {}
            row |= _paired({seed: r["test/acc"] for seed, r in by_seed.items()}, paired_with, delta)
            mine.append(row)
        for row in mine:  # the paper's figures beside ours where the runs carry a reference (a preset's `reference`)
            own = groups.get((setting, row["experiment"], row["variant"]))
            _with_paper(row, setting_runs, list(own.values()) if own and row["family"] != "θ0" else None)
        rows += sorted(mine, key=lambda r: (FAMILIES.index(r["family"]), r["method"]))
    return rows


def theta0_training(runs: list[dict]) -> str | None:
    """'θ0: target validation accuracy 0.917, reached by 3/5 seeds; its validation accuracy 0.9155 ± 0.0064 (mean over
    the 5 seeds)' where the runs carry a non-null `theta0/target_val_acc`; else None."""
    targets = {r["seed"]: r["theta0/target_val_acc"] for r in runs if r.get("theta0/target_val_acc") is not None}
    if not targets:
        return None
    val = {r["seed"]: r["theta0/val/acc"] for r in runs if r.get("theta0/val/acc") is not None and r["seed"] in targets}
    line = f"θ0: target validation accuracy {statistics.fmean(targets.values()):.3f}"
    if val:
        reached = sum(acc >= targets[seed] for seed, acc in val.items())
        line += (
            f", reached by {reached}/{len(val)} seeds; its validation accuracy {fmt(*t_interval(list(val.values())))}"
            f" (mean over the {len(val)} seeds)"
        )
    return line


def fmt(mean, half) -> str:
    """`0.8312 ± 0.0120`, `0.8312` without an interval, `–` without a value."""
    if mean is None:
        return "–"
    return f"{mean:.4f}" if half is None else f"{mean:.4f} ± {half:.4f}"
