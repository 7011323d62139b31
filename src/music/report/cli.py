"""`python -m music.report <sweep or run folders> [--out DIR] [--wandb] [--baseline EXPERIMENT]`."""

import argparse
import os
import sys
from pathlib import Path

from music.report.plots import plot
from music.report.runs import load_runs
from music.report.table import BASELINE, summarize
from music.report.writers import markdown, write_csv


def log_to_wandb(rows: list[dict], images: list[Path], out: Path) -> None:
    """The table and plots (PNG) as one W&B run (offline unless WANDB_MODE says otherwise; files under `out`)."""
    import wandb

    from music.tracking import keep_wandb_in

    keep_wandb_in(out)
    run = wandb.init(project="music", job_type="report", dir=str(out), mode=os.environ.get("WANDB_MODE", "offline"))
    try:
        columns = list(dict.fromkeys(c for r in rows for c in r))  # settings whose papers give other metrics differ
        data = [
            [str(r.get(c)) if isinstance(r.get(c), (list, tuple, dict)) else r.get(c) for c in columns] for r in rows
        ]
        run.log({"report": wandb.Table(columns=columns, data=data)})
        run.log({image.stem: wandb.Image(str(image)) for image in images if image.suffix == ".png"})
    finally:
        run.finish()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m music.report",
        description="Runs into a table with error bars and plots.",
    )
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
