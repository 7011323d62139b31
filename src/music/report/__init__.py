"""Turn runs into a table with error bars: `python -m music.report <sweep or run folders> [--out DIR] [--wandb]`.

Reads every metrics.json below the folders and groups runs by setting (dataset, tasks, head) and method: the
experiment plus its variant, i.e. the overrides whose values differ between runs of that experiment in that
setting (overrides every run shares are no part of a name). Writes report.md, report.csv and plots (PNG and
PDF): per method the mean ± 95% confidence interval (t distribution over seeds) of test accuracy, seen/unseen
accuracy and forgetting, the paired difference against `merged` on the same seeds, and a first row for θ0.

runs (loading, settings, variants, labels) → table (statistics) → writers (markdown, CSV) and plots → cli (+ W&B).
"""

from music.report.cli import main
from music.report.plots import distinct_curves, lambda_curves, plot
from music.report.runs import load_runs, method_label, overrides_of, variants, varying_keys
from music.report.table import summarize, t_interval, theta0_training
from music.report.writers import markdown, write_csv

__all__ = [
    "distinct_curves",
    "lambda_curves",
    "load_runs",
    "main",
    "markdown",
    "method_label",
    "overrides_of",
    "plot",
    "summarize",
    "t_interval",
    "theta0_training",
    "variants",
    "varying_keys",
    "write_csv",
]
