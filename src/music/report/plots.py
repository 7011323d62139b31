"""The plots of a setting, as PNG (for report.md and W&B) and PDF (vector, for a paper): methods with their 95% CI,
the merges' accuracy along λ, the sequential accuracy matrix."""

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from music.report.runs import FAMILIES, FAMILY_COLOURS, method_label, setting_of, strategy_of, variants


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
    columns = 3 if panels else 1  # panels: at least PANELS_FROM of them
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
        ax = axes.flat[index if panels else 0]
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
