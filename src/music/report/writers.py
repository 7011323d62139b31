"""report.md and report.csv from the table's rows."""

import csv
from pathlib import Path

from music.reference import reference_of
from music.report.runs import setting_of
from music.report.table import (
    BASELINE,
    COLLAPSED,
    METRICS,
    OPTIONAL_METRICS,
    TASK_MEAN,
    delta_key,
    fmt,
    gap_key,
    paper_key,
    paper_metrics,
    theta0_training,
)

CAPTIONS = {
    "methods": "Test accuracy by method (mean, 95% CI over seeds)",
    "lambda_curves": "Accuracy along λ (mean over seeds, band min–max over seeds)",
    "acc_matrix": "Sequential fine-tuning: accuracy matrix (mean over seeds)",
}


def paper_columns(rows: list[dict]) -> list[str]:
    """Per metric a paper gives: our mean and CI where the table has no column for it, the paper's figure, ours −
    paper and its CI (ours: the paper's figure is a constant)."""
    shown = METRICS + OPTIONAL_METRICS
    return [
        c
        for m in paper_metrics(rows)
        for c in ([m, f"{m} ci95"] * (m not in shown) + [paper_key(m), gap_key(m), f"{gap_key(m)} ci95"])
    ]


def write_csv(rows: list[dict], path: Path, baseline: str = BASELINE) -> None:
    metrics = METRICS + OPTIONAL_METRICS + [delta_key(baseline)]
    columns = (
        ["setting", "method", "family", "data", "task id at test", "memory", "n", "seeds"]
        + [c for m in metrics for c in (m, f"{m} ci95")]
        + ["paired seeds", COLLAPSED, "collapsed of"]
    )
    paper = paper_columns(rows)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns + paper)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {c: (" ".join(map(str, row[c])) if c == "seeds" else row[c]) for c in columns}
                | {c: row.get(c) for c in paper}  # blank where the paper gives no figure for the row's method
            )


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
    if paper_metrics(rows):
        lines += [
            "`<metric> paper`: the figure the paper prints (the preset's `reference`, source below each heading); "
            "`<metric> − paper`: our mean minus it, ± our 95% CI (the paper's figure is a constant).",
            "",
        ]
    for index, setting in enumerate(dict.fromkeys(r["setting"] for r in rows)):
        mine = [r for r in rows if r["setting"] == setting]
        per_task = "head=per_task" in setting
        optional = [m for m in OPTIONAL_METRICS if any(r[m] is not None for r in mine) and (m != TASK_MEAN or per_task)]
        shown = METRICS + optional
        paper = paper_metrics(mine)
        shown += [m for m in paper if m not in shown]  # our own column beside each paper figure
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
            *[c for m in paper for c in (paper_key(m), gap_key(m))],
        ]
        lines += [f"## {mine[0]['pretty']}", "", f"`{setting}`", ""]
        setting_runs = [r for r in runs or [] if setting_of(r) == setting]
        training = theta0_training(setting_runs)
        if training:
            lines += [training, ""]
        reference = reference_of(setting_runs)
        if reference and paper:
            note = " ".join(str(reference.get("note") or "").split())
            lines += [f"Paper: {reference['source']}." + (f" Note: {note}" if note else ""), ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in mine:
            cells = [fmt(r[m], r[f"{m} ci95"]) for m in shown]
            if collapsed:
                cells.append("–" if r[COLLAPSED] is None else f"{r[COLLAPSED]}/{r['collapsed of']}")
            cells.append(fmt(r[key], r[f"{key} ci95"]))
            for m in paper:  # blank where the paper gives no figure for this method
                given = m in r["paper"]
                cells += [f"{r[paper_key(m)]:.4f}", fmt(r[gap_key(m)], r[f"{gap_key(m)} ci95"])] if given else ["", ""]
            lines.append(
                f"| {r['method']} | {r['data']} | {r['task id at test']} | {r['memory']} | {r['n']} | "
                + " | ".join(cells)
                + " |"
            )
        lines.append("")
        for image in images or []:
            if image.suffix == ".png" and image.stem.endswith(f"_{index}"):
                lines += [f"![{CAPTIONS.get(image.stem.rsplit('_', 1)[0], image.stem)}]({image.name})", ""]
    return "\n".join(lines)
