"""report.md and report.csv from the table's rows."""

import csv
from pathlib import Path

from music.report.runs import setting_of
from music.report.table import (
    BASELINE,
    COLLAPSED,
    METRICS,
    OPTIONAL_METRICS,
    TASK_MEAN,
    delta_key,
    fmt,
    theta0_training,
)

CAPTIONS = {
    "methods": "Test accuracy by method (mean, 95% CI over seeds)",
    "lambda_curves": "Accuracy along λ (mean over seeds, band min–max over seeds)",
    "acc_matrix": "Sequential fine-tuning: accuracy matrix (mean over seeds)",
}


def write_csv(rows: list[dict], path: Path, baseline: str = BASELINE) -> None:
    metrics = METRICS + OPTIONAL_METRICS + [delta_key(baseline)]
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
        per_task = "head=per_task" in setting
        optional = [m for m in OPTIONAL_METRICS if any(r[m] is not None for r in mine) and (m != TASK_MEAN or per_task)]
        shown = METRICS + optional
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
            cells = [fmt(r[m], r[f"{m} ci95"]) for m in shown]
            if collapsed:
                cells.append("–" if r[COLLAPSED] is None else f"{r[COLLAPSED]}/{r['collapsed of']}")
            paired = fmt(r[key], r[f"{key} ci95"])
            lines.append(
                f"| {r['method']} | {r['data']} | {r['task id at test']} | {r['memory']} | {r['n']} | "
                + " | ".join(cells)
                + f" | {paired} |"
            )
        lines.append("")
        for image in images or []:
            if image.suffix == ".png" and image.stem.endswith(f"_{index}"):
                lines += [f"![{CAPTIONS.get(image.stem.rsplit('_', 1)[0], image.stem)}]({image.name})", ""]
    return "\n".join(lines)
