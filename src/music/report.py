"""Turn runs into a table with error bars: `python -m music.report <sweep or run folders> [--out DIR] [--wandb]`.

Reads every metrics.json below the folders and groups runs by setting (dataset, tasks, head) and method: the
experiment plus its variant, i.e. the overrides whose values differ between runs of that experiment in that
setting (overrides every run shares are no part of a name). Writes report.md, report.csv and plots (PNG and
PDF): per method the mean ± 95% confidence interval (t distribution over seeds) of test accuracy, seen/unseen
accuracy and forgetting, the paired difference against `merged` on the same seeds, and a first row for θ0.
"""

import argparse
import csv
import json
import math
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from scipy import stats

METRICS = ["test/acc", "test/acc_seen", "test/acc_unseen", "forgetting"]
# shown where some run of a setting has them
ALIGN_METRICS = [
    "test/acc_before_align",
    "align/kl_before",
    "align/kl_after",
    "align/residual_orthogonal",
    "align/residual_lstsq",
]
BASELINE = "merged"  # the default experiment each row is paired with (--baseline)


def delta_key(baseline: str = BASELINE) -> str:
    return f"Δ test/acc vs {baseline}"


COLLAPSED = "collapsed to θ0"
THETA0 = "θ0 (pretrained)"
# table and chart order: methods that read more data, or the task id at test, are a different contest
FAMILY_COLOURS = {
    "θ0": "#7f7f7f",
    "fine-tuning": "#1f77b4",
    "merging, data-free": "#ff7f0e",
    "merging, unlabeled data": "#bcbd22",
    "merging, labeled data": "#8c564b",
    "merging + alignment": "#2ca02c",
    "task id at test": "#9467bd",
    "negation": "#d62728",
}
FAMILIES = list(FAMILY_COLOURS)
DATA_ORDER = ("none", "unlabeled", "labeled")
DATASET_NAMES = {
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "kmnist": "KMNIST",
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "svhn": "SVHN",
}
HEAD_NAMES = {"shared": "shared head", "per_task": "per-task heads"}
MISSING = None  # the value of an override key a run does not set


# ---------------------------------------------------------------- runs, settings, variants (pure)


def load_runs(folders: list[str | Path]) -> list[dict]:
    runs = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("metrics.json")):
            run = json.loads(path.read_text())
            run["_path"] = str(path)
            runs.append(run)
    return runs


def t_interval(values: list[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% confidence interval (t distribution, n − 1 degrees of freedom)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def setting_of(run: dict) -> str:
    """What the runs of one table share: dataset, tasks, head protocol, and the optimizer state across sequential stages
    when it is carried (fresh, the default, is not spelled: runs from before the setting existed were fresh)."""
    carried = " optimizer_state=carry" if run.get("optimizer_state") == "carry" else ""
    tasks = json.dumps(run.get("tasks"), separators=(",", ":"))
    return f"{run.get('dataset')} tasks={tasks} head={run.get('head', 'shared')}{carried}"


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    """`a=1,tasks=[[1],[2]]` -> ['a=1', 'tasks=[[1],[2]]']: split at separators outside brackets and quotes."""
    parts, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    return parts + [current] if current else parts


def overrides_of(run: dict) -> dict[str, str]:
    """The run's own overrides as {key: value}: from `overrides` (a list of "key=value"), or on old runs from
    `variant` (Hydra's override_dirname). Keys lose a leading +, ++ or ~ so `++k=v` and `k=v` compare equal."""
    items = run.get("overrides")
    if items is None:
        items = _split_top_level(run.get("variant") or "")
    parsed = {}
    for item in items:
        key, _, value = item.partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def varying_keys(overrides: list[dict[str, str]]) -> list[str]:
    """Keys whose value is not the same in every dict (a key a dict lacks counts as its own value), sorted."""
    keys = sorted({k for o in overrides for k in o})
    return [k for k in keys if len({o.get(k, MISSING) for o in overrides}) > 1]


def variants(runs: list[dict]) -> list[tuple[tuple[str, str | None], ...]]:
    """Per run, its variant: ((key, value or None when unset), …) over the override keys that vary between the
    runs of its setting and experiment. Overrides shared by all those runs (data.download=false, tasks=…) are
    dropped; keys that only tell experiments apart (align=none in `…+none`) are named by the experiment already."""
    peers = defaultdict(list)
    for i, run in enumerate(runs):
        peers[(setting_of(run), run["experiment"])].append(i)
    result = [()] * len(runs)
    for members in peers.values():
        overrides = [overrides_of(runs[i]) for i in members]
        keys = varying_keys(overrides)
        for i, o in zip(members, overrides):
            result[i] = tuple((k, o.get(k, MISSING)) for k in keys)
    return result


def method_label(experiment: str, variant: tuple, short: bool = False) -> str:
    """`task_arithmetic [align.shots_per_class=5]`; short: the last part of each key only (plot labels)."""
    shown = [f"{k.rsplit('.', 1)[-1] if short else k}={v}" for k, v in variant if v is not MISSING]
    return f"{experiment} [{', '.join(shown)}]" if shown else experiment


def strategy_of(run: dict) -> str:
    """`strategy` as the run wrote it; old runs: guessed from the experiment and the keys a merge writes."""
    if run.get("strategy"):
        return run["strategy"]
    if run["experiment"] in ("pretrain", "merged", "sequential", "individual", "negation"):
        return run["experiment"]
    return "merge" if "lambda_curve" in run or "lambda" in run else run["experiment"]


def labels_of(run: dict) -> tuple[str, str]:
    """The two labels every row prints: the data the method reads for the new tasks (beyond the per-task fine-tunes,
    for merges: `none` | `unlabeled` | `labeled`), and whether it needs each test image's task id (`yes` | `no`)."""
    strategy = strategy_of(run)
    if strategy == "pretrain":
        return "–", "no"
    if strategy in ("merged", "sequential", "individual"):
        return "labeled", "yes" if strategy == "individual" else "no"
    data = run.get("merge/data") or "none"
    if run.get("align/method") not in (None, "none"):  # the aligners read a few unlabeled images per task
        data = max(data, "unlabeled", key=DATA_ORDER.index)
    return data, "yes" if run.get("merge/task_id") else "no"


def family_of(run: dict) -> str:
    strategy = strategy_of(run)
    data, task_id = labels_of(run)
    if strategy == "pretrain":
        return "θ0"
    if task_id == "yes":
        return "task id at test"
    if strategy in ("merged", "sequential"):
        return "fine-tuning"
    if strategy == "negation":
        return "negation"
    if run.get("align/method") not in (None, "none"):
        return "merging + alignment"
    return {"none": "merging, data-free", "unlabeled": "merging, unlabeled data"}.get(data, "merging, labeled data")


def pretty_setting(run: dict) -> str:
    """`Fashion-MNIST, 10 tasks of 1 class, shared head`; short class lists are spelled out."""
    dataset = DATASET_NAMES.get(run.get("dataset"), str(run.get("dataset")))
    tasks = run.get("tasks") or []
    sizes = {len(t) for t in tasks}
    if len(sizes) == 1:
        size = sizes.pop()
        what = f"{len(tasks)} task{'s' * (len(tasks) != 1)} of {size} class{'es' * (size != 1)}"
    else:
        what = f"{len(tasks)} tasks of {'/'.join(str(len(t)) for t in tasks)} classes"
    listed = ", ".join(json.dumps(t, separators=(",", ":")) for t in tasks)
    if len(tasks) <= 5 and len(listed) <= 30:
        what += f" ({listed})"
    head = run.get("head", "shared")
    optimizer = (
        ", optimizer state carried across sequential stages"
        if run.get("optimizer_state") == "carry"
        else ", a fresh optimizer per stage"
    )
    return f"{dataset}, {what}, {HEAD_NAMES.get(head, str(head))}{optimizer}"


# ---------------------------------------------------------------- the table (pure)


def _stats(values: list[float]) -> tuple[float | None, float | None]:
    return t_interval(values) if values else (None, None)


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
    for metric in METRICS + ALIGN_METRICS:
        row[metric], row[f"{metric} ci95"] = None, None
    row["test/acc"], row["test/acc ci95"] = t_interval(list(per_seed.values()))
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
            for metric in METRICS + ALIGN_METRICS:
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
            f", reached by {reached}/{len(val)} seeds; its validation accuracy {_fmt(*t_interval(list(val.values())))}"
            f" (mean over the {len(val)} seeds)"
        )
    return line


def _fmt(mean, half) -> str:
    if mean is None:
        return "–"
    return f"{mean:.4f}" if half is None else f"{mean:.4f} ± {half:.4f}"


def write_csv(rows: list[dict], path: Path, baseline: str = BASELINE) -> None:
    metrics = METRICS + ALIGN_METRICS + [delta_key(baseline)]
    columns = (
        ["setting", "method", "family", "data", "task id at test", "memory", "n", "seeds"]
        + [c for m in metrics for c in (m, f"{m} ci95")]
        + ["paired seeds", COLLAPSED, "collapsed of"]
    )
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: (" ".join(map(str, row[c])) if c == "seeds" else row[c]) for c in columns})


def markdown(
    rows: list[dict], runs: list[dict] | None = None, images: list[Path] | None = None, baseline: str = BASELINE
) -> str:
    """report.md: per setting a heading in words, θ0's training line, the table, then the plots (PNG)."""
    key = delta_key(baseline)
    delta = f"{key} (paired)"
    lines = [
        "# Report",
        "",
        "Mean ± half-width of the 95% confidence interval (t distribution over seeds); "
        f"{delta}: mean difference to `{baseline}` on the seeds both have.",
        "",
    ]
    for index, setting in enumerate(dict.fromkeys(r["setting"] for r in rows)):
        mine = [r for r in rows if r["setting"] == setting]
        shown = METRICS + [m for m in ALIGN_METRICS if any(r[m] is not None for r in mine)]
        collapsed = any(r[COLLAPSED] is not None for r in mine)
        header = [
            "method",
            "data",
            "task id at test",
            "memory",
            "n",
            "test acc",
            "seen",
            "unseen",
            "forgetting",
            *shown[len(METRICS) :],
            *[COLLAPSED] * collapsed,
            delta,
        ]
        lines += [f"## {mine[0]['pretty']}", "", f"`{setting}`", ""]
        training = theta0_training([r for r in runs or [] if setting_of(r) == setting])
        if training:
            lines += [training, ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in mine:
            cells = [_fmt(r[m], r[f"{m} ci95"]) for m in shown]
            if collapsed:
                cells.append("–" if r[COLLAPSED] is None else f"{r[COLLAPSED]}/{r['collapsed of']}")
            paired = _fmt(r[key], r[f"{key} ci95"])
            lines.append(
                f"| {r['method']} | {r['data']} | {r['task id at test']} | {r['memory']} | {r['n']} | "
                + " | ".join(cells)
                + f" | {paired} |"
            )
        lines.append("")
        for image in images or []:
            if image.suffix == ".png" and image.stem.endswith(f"_{index}"):
                lines += [f"![{_CAPTIONS.get(image.stem.rsplit('_', 1)[0], image.stem)}]({image.name})", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- plots

_CAPTIONS = {
    "methods": "Test accuracy by method (mean, 95% CI over seeds)",
    "lambda_curves": "Accuracy along λ (mean over seeds, band min–max over seeds)",
    "acc_matrix": "Sequential fine-tuning: accuracy matrix (mean over seeds)",
}


def lambda_curves(runs: list[dict], labels: list[str]) -> dict[str, dict]:
    """Per method label: {"points": {λ: [(seed, val, test), …]}, "picked": [(seed, λ, test at λ), …]}, from each
    run's λ curve at the run's own picked knob values (keep_fraction, p, …)."""
    curves = defaultdict(lambda: {"points": defaultdict(list), "picked": []})
    for run, label in zip(runs, labels):
        for point in run.get("lambda_curve") or []:
            knobs = [k for k in point if k != "lambda" and not k.startswith(("val/", "test/"))]
            if all(point[k] == run.get(k) for k in knobs) and "test/acc" in point:
                curves[label]["points"][point["lambda"]].append((run["seed"], point.get("val/acc"), point["test/acc"]))
                if point["lambda"] == run.get("lambda"):
                    curves[label]["picked"].append((run["seed"], point["lambda"], point["test/acc"]))
    return curves


def distinct_curves(curves: dict[str, dict]) -> dict[str, dict]:
    """Curves with more than one λ, each drawn once: rows whose curves are the same numbers (the merge before
    alignment, a knob alignment alone reads) share one, named by its first row and the others:
    `task_arithmetic (also ft_classifier)`."""
    shared = defaultdict(list)
    for label, curve in sorted(curves.items()):
        if len(curve["points"]) > 1:
            shared[json.dumps(sorted((lam, sorted(p)) for lam, p in curve["points"].items()))].append(label)
    return {
        labels[0] + (f" (also {', '.join(labels[1:])})" if len(labels) > 1 else ""): curves[labels[0]]
        for labels in shared.values()
    }


def plot(runs: list[dict], rows: list[dict], out: Path) -> list[Path]:
    """Per setting: methods with 95% CI, λ curves, the sequential accuracy matrix; each as PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42})
    labels = [method_label(r["experiment"], v) for r, v in zip(runs, variants(runs))]
    written = []
    for index, setting in enumerate(dict.fromkeys(r["setting"] for r in rows)):
        mine = [r for r in rows if r["setting"] == setting]
        theta0 = next((r["test/acc"] for r in mine if r["family"] == "θ0"), None)
        title = mine[0]["pretty"]
        written += _methods_chart(plt, mine, theta0, title, out / f"methods_{index}")
        in_setting = [(r, label) for r, label in zip(runs, labels) if setting_of(r) == setting]
        merges = [(r, label) for r, label in in_setting if strategy_of(r) == "merge"]
        curves = distinct_curves(lambda_curves([r for r, _ in merges], [label for _, label in merges]))
        if curves:
            written += _lambda_chart(plt, curves, theta0, title, out / f"lambda_curves_{index}")
        matrices = defaultdict(list)
        for run, label in in_setting:
            if run.get("acc_matrix"):
                matrices[label].append(run["acc_matrix"])
        if matrices:
            written += _matrix_chart(plt, matrices, in_setting[0][0].get("tasks"), title, out / f"acc_matrix_{index}")
    return written


def _methods_chart(plt, rows: list[dict], theta0: float | None, title: str, stem: Path) -> list[Path]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = [r for r in rows if r["test/acc"] is not None]
    names = [
        r["method"] if r["family"] == "θ0" else method_label(r["experiment"], r["variant"], short=True) for r in rows
    ]
    fig, ax = plt.subplots(figsize=(max(5.5, 0.5 * len(rows) + 2.5), 4.8))
    means = [r["test/acc"] for r in rows]
    halves = [r["test/acc ci95"] or 0 for r in rows]
    ax.bar(
        range(len(rows)),
        means,
        yerr=halves,
        capsize=3,
        color=[FAMILY_COLOURS[r["family"]] for r in rows],
        edgecolor="black",
        linewidth=0.5,
        error_kw={"linewidth": 0.8},
    )
    low = min([m - h for m, h in zip(means, halves)] + ([theta0] if theta0 is not None else []))
    high = max([m + h for m, h in zip(means, halves)] + ([theta0] if theta0 is not None else []))
    pad = max(0.1 * (high - low), 0.01)
    ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad))
    handles = [
        Patch(facecolor=FAMILY_COLOURS[f], edgecolor="black", linewidth=0.5, label=f)
        for f in FAMILIES
        if any(r["family"] == f for r in rows)
    ]
    if theta0 is not None:
        ax.axhline(theta0, color=FAMILY_COLOURS["θ0"], linestyle="--", linewidth=1)
        handles.append(Line2D([], [], color=FAMILY_COLOURS["θ0"], linestyle="--", label=f"θ0 = {theta0:.3f}"))
    ax.set_xticks(range(len(rows)), names, rotation=40, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylabel("test accuracy (95% CI)")
    ax.set_title(f"{title}\ntest accuracy by method", fontsize=10)
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    ax.set_axisbelow(True)
    ax.legend(handles=handles, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(plt, fig, stem)


def _draw_curve(ax, curve: dict, colour) -> None:
    """One merge's λ curve: test (solid) and validation (dashed) means over seeds, min–max bands, λ picked per seed."""
    lambdas = sorted(curve["points"])
    for column, style, alpha in ((1, "--", 0.10), (2, "-", 0.20)):
        values = [[p[column] for p in curve["points"][lam] if p[column] is not None] for lam in lambdas]
        kept = [(lam, v) for lam, v in zip(lambdas, values) if v]
        xs = [lam for lam, _ in kept]
        ax.plot(xs, [statistics.fmean(v) for _, v in kept], style, color=colour, linewidth=1.3)
        ax.fill_between(
            xs, [min(v) for _, v in kept], [max(v) for _, v in kept], color=colour, alpha=alpha, linewidth=0
        )
    if curve["picked"]:
        ax.scatter(
            [p[1] for p in curve["picked"]],
            [p[2] for p in curve["picked"]],
            marker="o",
            s=22,
            facecolor="white",
            edgecolor=colour,
            linewidth=1.2,
            zorder=3,
        )


PANELS_FROM = 4  # this many curves or more: one small panel per method on shared axes instead of one tangle


def _lambda_chart(plt, curves: dict[str, dict], theta0: float | None, title: str, stem: Path) -> list[Path]:
    import textwrap

    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    colours = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20").colors
    items = [(label, curve, colour) for (label, curve), colour in zip(sorted(curves.items()), colours * 3)]
    panels = len(items) >= PANELS_FROM
    columns = min(3, len(items)) if panels else 1
    rows = math.ceil(len(items) / columns) if panels else 1
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(3.2 * columns + 1.8, 2.6 * rows + 0.9) if panels else (6.5, 4),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    handles = []
    for index, (label, curve, colour) in enumerate(items):
        ax = axes.flat[index] if panels else axes[0, 0]
        _draw_curve(ax, curve, colour)
        if panels:
            ax.set_title(textwrap.fill(label, 40), fontsize=8)
        else:
            handles.append(
                Line2D([], [], color=colour, linewidth=2, label=label.replace(" [", "\n[").replace("] (", "]\n("))
            )
    for ax in axes.flat[: len(items) if panels else 1]:
        if theta0 is not None:
            ax.axhline(theta0, color=FAMILY_COLOURS["θ0"], linestyle=":", linewidth=1)
        ax.grid(linewidth=0.4, alpha=0.5)
    for ax in axes.flat[len(items) if panels else 1 :]:
        ax.set_visible(False)
    if theta0 is not None:
        handles.append(Line2D([], [], color=FAMILY_COLOURS["θ0"], linestyle=":", label=f"θ0 test = {theta0:.3f}"))
    handles += [
        Line2D([], [], color="black", linestyle="-", label="test (mean)"),
        Line2D([], [], color="black", linestyle="--", label="validation (mean)"),
        Patch(facecolor="black", alpha=0.2, label="min–max over seeds"),
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markerfacecolor="white",
            markeredgecolor="black",
            label="λ picked on val (per seed)",
        ),
    ]
    for ax in axes[-1]:
        ax.set_xlabel("λ")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy" if panels else "accuracy (mean over seeds; band: min–max)")
    fig.suptitle(f"{title}\naccuracy of the merge along λ", fontsize=10)
    fig.legend(handles=handles, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 0.9))
    return _save(plt, fig, stem)


def _matrix_chart(plt, matrices: dict[str, list], tasks: list | None, title: str, stem: Path) -> list[Path]:
    count = len(matrices)
    size = len(next(iter(matrices.values()))[0])
    cell = max(0.45, min(1.0, 5 / size))
    fig, axes = plt.subplots(
        1, count, figsize=(count * (cell * size + 1.2) + 1, cell * size + 1.3), squeeze=False, layout="constrained"
    )
    names = [json.dumps(t, separators=(",", ":")) for t in tasks or []]
    ticks = names if len(names) == size and max(map(len, names)) <= 7 else [str(j + 1) for j in range(size)]
    cmap = plt.get_cmap("viridis")
    for ax, (label, runs) in zip(axes[0], sorted(matrices.items())):
        rows, cols = len(runs[0]), len(runs[0][0])
        mean = [[statistics.fmean(m[i][j] for m in runs) for j in range(cols)] for i in range(rows)]
        image = ax.imshow(mean, vmin=0, vmax=1, cmap=cmap)
        for i in range(rows):
            for j in range(cols):
                red, green, blue, _ = cmap(mean[i][j])
                ax.text(
                    j,
                    i,
                    f"{abs(mean[i][j]) if round(mean[i][j], 2) == 0 else mean[i][j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7 if size > 6 else 8,
                    color="black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white",
                )
        ax.set_xticks(range(cols), ticks[:cols], rotation=0 if max(map(len, ticks)) <= 3 else 45)
        ax.set_yticks(range(rows), ticks[:rows])
        ax.set_xlabel("accuracy on task j")
        ax.set_ylabel("after training on task i")
        ax.set_title(f"{label} (mean of {len(runs)} seed{'s' * (len(runs) != 1)})", fontsize=9)
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
    fig.colorbar(image, ax=axes[0].tolist(), label="test accuracy", shrink=0.9)
    fig.suptitle(f"{title}\naccuracy matrix of sequential fine-tuning", fontsize=10)
    return _save(plt, fig, stem, tight=False)


def _save(plt, fig, stem: Path, tight: bool = True) -> list[Path]:
    """stem.png (150 dpi, for report.md and W&B) and stem.pdf (vector, for a paper)."""
    if tight:
        fig.tight_layout()
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


# ---------------------------------------------------------------- W&B, command line


def log_to_wandb(rows: list[dict], images: list[Path], out: Path) -> None:
    """The table and plots (PNG) as one W&B run (offline unless WANDB_MODE says otherwise; files under `out`)."""
    import wandb

    from music.tracking import keep_wandb_in

    keep_wandb_in(out)
    run = wandb.init(project="music", job_type="report", dir=str(out), mode=os.environ.get("WANDB_MODE", "offline"))
    try:
        columns = list(rows[0])
        data = [[str(r[c]) if isinstance(r[c], (list, tuple)) else r[c] for c in columns] for r in rows]
        run.log({"report": wandb.Table(columns=columns, data=data)})
        run.log({image.stem: wandb.Image(str(image)) for image in images if image.suffix == ".png"})
    finally:
        run.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m music.report", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="sweep or run folders (searched for metrics.json)")
    parser.add_argument("--out", help="where report.md, report.csv and the plots go (default: the first folder)")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plots to W&B")
    parser.add_argument(
        "--baseline", default=BASELINE, help=f"the experiment each row is paired with (default: {BASELINE})"
    )
    args = parser.parse_args(argv)
    runs = load_runs(args.folders)
    if not runs:
        print(f"error: no metrics.json under {', '.join(args.folders)}", file=sys.stderr)
        return 2
    out = Path(args.out or args.folders[0])
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(runs, args.baseline)
    write_csv(rows, out / "report.csv", args.baseline)
    images = plot(runs, rows, out)
    report = markdown(rows, runs, images, args.baseline)
    (out / "report.md").write_text(report)
    if args.wandb:
        log_to_wandb(rows, images, out)
    print(report)
    print(f"{len(runs)} runs -> {out / 'report.md'}, {out / 'report.csv'}, {len(images)} plot files (PNG and PDF)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
