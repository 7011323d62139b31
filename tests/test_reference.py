"""A preset's published figures (`reference`): refused in one line when malformed, copied into metrics.json, printed by
the report as a paper column and ours − paper beside each method's own figures."""

import csv
import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import CONFIGS, FAST, make_cfg
from music.config import validate
from music.errors import ConfigError
from music.reference import THETA0, check_reference
from music.report import main as report_main
from music.report import summarize
from music.report.table import t_interval
from music.run import run
from music.strategies import STRATEGIES
from test_config import run_train

GOOD = {"source": "Somebody et al. 2024, Table 3", "note": None, "figures": {"ties": {"test/acc_task_mean": 0.724}}}
BAD = [
    (
        {**GOOD, "figures": {"ties": {"test/acc_task_mean": 72.4}}},
        "reference.figures.ties.test/acc_task_mean=72.4",
        "a number in [0, 1] (a fraction: 72.4% is 0.724)",
    ),
    ({**GOOD, "figures": {"ties": {"test/acc": -0.1}}}, "reference.figures.ties.test/acc=-0.1", "a number in [0, 1]"),
    ({**GOOD, "figures": {"ties": {"test/acc": True}}}, "reference.figures.ties.test/acc=True", "a number in [0, 1]"),
    ({**GOOD, "figures": {"ties": 0.724}}, "reference.figures.ties=0.724", "a non-empty mapping metrics.json key"),
    ({**GOOD, "figures": {}}, "reference.figures={}", "a non-empty mapping experiment_name"),
    ({**GOOD, "table": 3}, "reference.table=3", "no such key: reference has source, note, figures"),
    ({"figures": GOOD["figures"]}, "reference.source=None", "a non-empty string saying where the figures are printed"),
    ({**GOOD, "note": 5}, "reference.note=5", "a str or null"),
    ("Table 3", "reference='Table 3'", "null or a mapping with keys source, note, figures"),
]


def hydra_value(value) -> str:
    """A value in Hydra's override grammar (keys unquoted, strings quoted)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {hydra_value(v)}" for k, v in value.items()) + "}"
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def reference_override(reference: dict) -> str:
    return f"reference={hydra_value(reference)}"


@pytest.mark.parametrize(("reference", "setting", "allowed"), BAD)
def test_a_bad_reference_names_the_setting_and_what_is_allowed(tmp_path, reference, setting, allowed):
    with pytest.raises(ConfigError) as err:
        check_reference(reference)
    assert str(err.value).startswith(f"{setting} is not allowed: ") and allowed in str(err.value)
    assert "\n" not in str(err.value)


def test_a_good_reference_and_none_pass_and_the_config_declares_it(tmp_path):
    check_reference(None)
    check_reference(GOOD)
    assert make_cfg(tmp_path, tmp_path).reference is None
    validate(make_cfg(tmp_path, tmp_path, reference_override(GOOD)), STRATEGIES)


def test_the_cli_refuses_a_percentage_as_a_figure_in_one_line_before_any_work(tmp_path):
    bad = {**GOOD, "figures": {"ties": {"test/acc_task_mean": 72.4}}}
    result = run_train(tmp_path, f"data.data_dir={tmp_path / 'nodata'}", reference_override(bad))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "error: reference.figures.ties.test/acc_task_mean=72.4 is not allowed: a number in [0, 1] "
        "(a fraction: 72.4% is 0.724)"
    )
    assert not (tmp_path / "logs" / "cache").exists()


def test_metrics_json_carries_the_reference(tmp_path, mnist_dir):
    cfg = make_cfg(tmp_path, mnist_dir, "experiment=merged", "tasks=[[0,1],[2,3]]", *FAST, reference_override(GOOD))
    metrics = run(cfg)
    assert metrics["reference"] == GOOD
    assert metrics["theta0/test/acc_task_mean"] is not None  # θ0's row has its own figure beside the paper's zero-shot
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["reference"] == GOOD


def test_a_run_without_reference_writes_no_key(tmp_path, mnist_dir):
    metrics = run(make_cfg(tmp_path, mnist_dir, "experiment=merged", "tasks=[[0,1],[2,3]]", *FAST))
    assert "reference" not in metrics


def write_run(folder: Path, experiment: str, seed: int, acc: float, task_mean: float, reference: dict | None, **extra):
    """A run folder as a sweep leaves it (the report reads nothing else)."""
    folder.mkdir(parents=True)
    metrics = (
        {
            "experiment": experiment,
            "strategy": "merge" if experiment not in ("merged", "individual") else experiment,
            "seed": seed,
            "dataset": "composite",
            "dataset_title": "8 datasets",
            "tasks": [[0, 1], [2, 3]],
            "head": "per_task",
            "test/acc": acc,
            "test/acc_seen": acc,
            "test/acc_unseen": None,
            "test/acc_task_mean": task_mean,
            "val/acc": acc,
            "theta0/test/acc": 0.5,
            "theta0/test/acc_task_mean": 0.47 + 0.01 * seed,
            "theta0/setting": "zero-shot",
        }
        | ({"reference": reference} if reference else {})
        | extra
    )
    (folder / "metrics.json").write_text(json.dumps(metrics))


REFERENCE = {
    "source": "Somebody et al. 2025, Table 1, ViT-B/32",
    "note": "TIES not verified.",
    "figures": {
        "task_arithmetic": {"test/acc_task_mean": 0.708},
        "ties": {"test/acc_task_mean": 0.751, "test/acc": 0.7},
        THETA0: {"test/acc_task_mean": 0.483},
    },
}


def test_the_report_prints_the_paper_column_and_ours_minus_paper_by_hand(tmp_path):
    sweep = tmp_path / "sweep"
    task_arithmetic, ties, merged = [0.70, 0.72, 0.74], [0.76, 0.78, 0.77], [0.80, 0.82, 0.84]
    for seed in range(3):
        write_run(sweep / f"ta{seed}", "task_arithmetic", seed, 0.6, task_arithmetic[seed], REFERENCE)
        write_run(sweep / f"ties{seed}", "ties", seed, 0.65 + 0.01 * seed, ties[seed], REFERENCE)
        write_run(sweep / f"m{seed}", "merged", seed, 0.8, merged[seed], REFERENCE)
    # another setting whose runs carry no reference: no paper column there
    write_run(tmp_path / "other" / "ta0", "task_arithmetic", 0, 0.6, 0.7, None, dataset="mnist", dataset_title="MNIST")

    runs = [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("metrics.json"))]
    rows = {r["method"]: r for r in summarize(runs) if r["setting"].startswith("composite")}
    t = 4.302652729911275  # t_{0.975, 2}
    ta = rows["task_arithmetic"]
    assert ta["test/acc_task_mean paper"] == 0.708
    assert ta["test/acc_task_mean − paper"] == pytest.approx(0.72 - 0.708)  # mean 0.72
    assert ta["test/acc_task_mean − paper ci95"] == pytest.approx(t * 0.02 / 3**0.5)  # our CI: sd 0.02
    assert rows["ties"]["test/acc_task_mean − paper"] == pytest.approx(0.77 - 0.751)
    assert rows["ties"]["test/acc − paper"] == pytest.approx(0.66 - 0.7)  # a second metric the paper gives TIES only
    assert "test/acc paper" not in ta and ta["paper"] == {"test/acc_task_mean": 0.708}
    assert rows["merged"]["paper"] == {}  # the paper gives nothing for it: blank cells
    theta0 = rows["θ0 (pretrained)"]
    assert theta0["test/acc_task_mean paper"] == 0.483  # θ0's own task mean: 0.47, 0.48, 0.49 over the seeds
    assert theta0["test/acc_task_mean − paper"] == pytest.approx(0.48 - 0.483)
    assert theta0["test/acc_task_mean − paper ci95"] == pytest.approx(t * 0.01 / 3**0.5)

    assert report_main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "report.md").read_text()
    assert "Paper: Somebody et al. 2025, Table 1, ViT-B/32. Note: TIES not verified." in table
    header = next(line for line in table.splitlines() if line.startswith("| method") and "paper" in line)
    assert header.endswith(
        "| test/acc_task_mean paper | test/acc_task_mean − paper | test/acc paper | test/acc − paper |"
    )
    mean, half = t_interval(task_arithmetic)
    ta_line = next(line for line in table.splitlines() if line.startswith("| task_arithmetic |") and "0.7080" in line)
    assert ta_line.endswith(f"| 0.7080 | {mean - 0.708:.4f} ± {half:.4f} |  |  |")
    assert "| 0.7510 | 0.0190 ± " in table and "| 0.7000 | -0.0400 ± 0.0248 |" in table
    merged_line = next(line for line in table.splitlines() if line.startswith("| merged |"))
    assert merged_line.endswith("|  |  |  |  |")
    mnist = next(section for section in table.split("\n## ") if section.startswith("MNIST"))
    assert "paper" not in mnist and "| task_arithmetic |" in mnist

    with (tmp_path / "report" / "report.csv").open() as f:
        csv_rows = {(r["setting"], r["method"]): r for r in csv.DictReader(f)}
    by_method = {m: r for (s, m), r in csv_rows.items() if s.startswith("composite")}
    assert float(by_method["task_arithmetic"]["test/acc_task_mean paper"]) == 0.708
    assert math.isclose(float(by_method["task_arithmetic"]["test/acc_task_mean − paper"]), mean - 0.708)
    assert by_method["merged"]["test/acc_task_mean paper"] == ""
    assert csv_rows[(next(s for s, _ in csv_rows if s.startswith("mnist")), "task_arithmetic")]["test/acc paper"] == ""


def test_the_eight_task_preset_quotes_figures_of_the_experiments_it_names():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["sweep=eight_tasks"], return_hydra_config=True)
    check_reference(cfg.reference)
    named = {p.stem for p in (CONFIGS / "experiment").glob("*.yaml")} | {
        p.stem for p in (CONFIGS / "merge").glob("*.yaml")
    }
    assert set(cfg.reference.figures) <= named | {THETA0}
    swept = set(str(cfg.hydra.sweeper.params.experiment).split(","))
    assert {"task_arithmetic", "ties", "adamerging", "tsv", "iso_cts", "individual"} <= swept & set(
        cfg.reference.figures
    )
