"""Turn runs into a table with error bars: `python -m music.report <sweep or run folders> [--out DIR] [--wandb]`.

Reads every metrics.json below the folders, groups runs by setting (dataset, tasks, head) and method
(`experiment`), and writes report.md, report.csv and PNG plots: per method the mean ± 95% confidence interval
(t distribution over seeds) of test accuracy, seen/unseen accuracy and forgetting, and the paired difference
against `merged` on the same seeds.
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
ALIGN_METRICS = ["test/acc_before_align", "align/kl_before", "align/kl_after", "align/residual_orthogonal", "align/residual_lstsq"]
BASELINE = "merged"


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
    return f"{run.get('dataset')} tasks={json.dumps(run.get('tasks'), separators=(',', ':'))} head={run.get('head', 'shared')}"


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (setting, method): n seeds, mean and CI half-width of each metric, paired Δ vs merged."""
    groups: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for run in runs:
        method = run["experiment"] + (f" [{run['variant']}]" if run.get("variant") else "")
        groups[(setting_of(run), method)][run["seed"]] = run  # one run per seed (the last found)
    rows = []
    for (setting, method), by_seed in sorted(groups.items()):
        row = {"setting": setting, "method": method, "n": len(by_seed), "seeds": sorted(by_seed)}
        for metric in METRICS + ALIGN_METRICS:
            values = [r[metric] for r in by_seed.values() if r.get(metric) is not None]
            mean, half = t_interval(values) if values else (None, None)
            row[metric], row[f"{metric} ci95"] = mean, half
        baseline = groups.get((setting, BASELINE), {})
        paired = [by_seed[s]["test/acc"] - baseline[s]["test/acc"] for s in sorted(set(by_seed) & set(baseline))]
        mean, half = t_interval(paired) if paired and method != BASELINE else (None, None)
        row[f"Δ test/acc vs {BASELINE}"], row[f"Δ test/acc vs {BASELINE} ci95"], row["paired seeds"] = mean, half, len(paired)
        rows.append(row)
    return rows


def _fmt(mean, half) -> str:
    if mean is None:
        return "–"
    return f"{mean:.4f}" if half is None else f"{mean:.4f} ± {half:.4f}"


def write_csv(rows: list[dict], path: Path) -> None:
    metrics = METRICS + ALIGN_METRICS + [f"Δ test/acc vs {BASELINE}"]
    columns = ["setting", "method", "n", "seeds"] + [c for m in metrics for c in (m, f"{m} ci95")] + ["paired seeds"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: (" ".join(map(str, row[c])) if c == "seeds" else row[c]) for c in columns})


def markdown(rows: list[dict]) -> str:
    delta = f"Δ test/acc vs {BASELINE} (paired)"
    lines = ["# Report", "", "Mean ± half-width of the 95% confidence interval (t distribution over seeds).", ""]
    for setting in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == setting]
        shown = METRICS + [m for m in ALIGN_METRICS if any(r[m] is not None for r in mine)]
        header = ["method", "n", "test acc", "seen", "unseen", "forgetting", *shown[len(METRICS):], delta]
        lines += [f"## {setting}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in mine:
            cells = [_fmt(r[m], r[f"{m} ci95"]) for m in shown]
            paired = _fmt(r[f"Δ test/acc vs {BASELINE}"], r[f"Δ test/acc vs {BASELINE} ci95"])
            lines.append(f"| {r['method']} | {r['n']} | " + " | ".join(cells) + f" | {paired} |")
        lines.append("")
    return "\n".join(lines)


def plot(runs: list[dict], rows: list[dict], out: Path) -> list[Path]:
    """methods with error bars, the mean sequential accuracy matrix, λ curves; one PNG of each per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for index, setting in enumerate(dict.fromkeys(r["setting"] for r in rows)):
        mine = [r for r in rows if r["setting"] == setting]
        fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(mine) + 2), 3.5 + 0.05 * max(len(r["method"]) for r in mine)))
        ax.bar([r["method"] for r in mine], [r["test/acc"] for r in mine], yerr=[r["test/acc ci95"] or 0 for r in mine], capsize=4)
        ax.set_ylabel("test accuracy (95% CI)")
        ax.set_title(setting, fontsize=8)
        ax.tick_params(axis="x", rotation=45)
        written.append(_save(fig, out / f"methods_{index}.png"))

        matrices = [r["acc_matrix"] for r in runs if setting_of(r) == setting and r.get("acc_matrix")]
        if matrices:
            mean = [[statistics.fmean(m[i][j] for m in matrices) for j in range(len(matrices[0][0]))] for i in range(len(matrices[0]))]
            fig, ax = plt.subplots(figsize=(4, 3.5))
            image = ax.imshow(mean, vmin=0, vmax=1, cmap="viridis")
            ax.set_xticks(range(len(mean[0])))
            ax.set_yticks(range(len(mean)))
            ax.set_xlabel("test accuracy on task j")
            ax.set_ylabel("after stage i")
            ax.set_title(f"sequential, mean of {len(matrices)} seeds", fontsize=8)
            fig.colorbar(image)
            written.append(_save(fig, out / f"acc_matrix_{index}.png"))

        curves = defaultdict(lambda: defaultdict(list))  # method -> λ -> test accs at the picked knobs
        for r in runs:
            if setting_of(r) != setting or not r.get("lambda_curve"):
                continue
            for point in r["lambda_curve"]:
                knobs = [k for k in point if k not in ("lambda", "val/acc", "test/acc") and not k.startswith(("val/", "test/"))]
                if all(point[k] == r.get(k) for k in knobs) and "test/acc" in point:
                    curves[r["experiment"]][point["lambda"]].append(point["test/acc"])
        if curves:
            fig, ax = plt.subplots(figsize=(5, 3.5))
            for method, by_lambda in sorted(curves.items()):
                lambdas = sorted(by_lambda)
                ax.plot(lambdas, [statistics.fmean(by_lambda[lam]) for lam in lambdas], marker="o", label=method)
            ax.set_xlabel("λ")
            ax.set_ylabel("test accuracy (mean over seeds)")
            ax.legend(fontsize=7)
            written.append(_save(fig, out / f"lambda_curves_{index}.png"))
    return written


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def log_to_wandb(rows: list[dict], images: list[Path], out: Path) -> None:
    """The table and plots as one W&B run (offline unless WANDB_MODE says otherwise; files under `out`)."""
    import wandb

    from music.tracking import keep_wandb_in

    keep_wandb_in(out)
    run = wandb.init(project="music", job_type="report", dir=str(out), mode=os.environ.get("WANDB_MODE", "offline"))
    try:
        columns = list(rows[0])
        run.log({"report": wandb.Table(columns=columns, data=[[str(r[c]) if isinstance(r[c], list) else r[c] for c in columns] for r in rows])})
        run.log({image.stem: wandb.Image(str(image)) for image in images})
    finally:
        run.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m music.report", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="sweep or run folders (searched for metrics.json)")
    parser.add_argument("--out", help="where report.md, report.csv and the plots go (default: the first folder)")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plots to W&B")
    args = parser.parse_args(argv)
    runs = load_runs(args.folders)
    if not runs:
        print(f"error: no metrics.json under {', '.join(args.folders)}", file=sys.stderr)
        return 2
    out = Path(args.out or args.folders[0])
    out.mkdir(parents=True, exist_ok=True)
    rows = summarize(runs)
    write_csv(rows, out / "report.csv")
    (out / "report.md").write_text(markdown(rows))
    images = plot(runs, rows, out)
    if args.wandb:
        log_to_wandb(rows, images, out)
    print(markdown(rows))
    print(f"{len(runs)} runs -> {out / 'report.md'}, {out / 'report.csv'}, {len(images)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
