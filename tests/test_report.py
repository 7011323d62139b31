"""The multi-seed report: grouping, variants, means with confidence intervals, paired differences, plots."""

import csv
import json
import statistics
import subprocess
import sys

import pytest

from conftest import ROOT
from music.report import (
    distinct_curves,
    lambda_curves,
    method_label,
    overrides_of,
    summarize,
    theta0_training,
    variants,
    varying_keys,
)
from music.report import main as report_main


def write_run(folder, experiment, seed, acc, **extra):
    folder.mkdir(parents=True)
    metrics = {
        "experiment": experiment,
        "seed": seed,
        "dataset": "fashion_mnist",
        "dataset_title": "Fashion-MNIST",
        "tasks": [[1], [2]],
        "head": "shared",
        "test/acc": acc,
        "test/acc_seen": acc + 0.1,
        "test/acc_unseen": None,
        "val/acc": acc,
    } | extra
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_report_means_intervals_and_paired_differences_by_hand(tmp_path):
    merged, sequential = [0.70, 0.72, 0.74], [0.80, 0.86, 0.83]
    for seed, (m, s) in enumerate(zip(merged, sequential)):
        write_run(tmp_path / f"{seed}_merged", "merged", seed, m)
        matrix = [[0.9, 0.1], [0.6, 0.8]]
        write_run(
            tmp_path / f"{seed}_sequential", "sequential", seed, s, forgetting=0.3 + 0.01 * seed, acc_matrix=matrix
        )
    write_run(
        tmp_path / "x_task_arithmetic",
        "task_arithmetic",
        0,
        0.9,
        lambda_curve=[
            {"lambda": 0.5, "val/acc": 0.9, "test/acc": 0.9},
            {"lambda": 1.0, "val/acc": 0.8, "test/acc": 0.85},
        ],
        **{"lambda": 0.5},
    )

    rows = {r["method"]: r for r in summarize([json.loads(p.read_text()) for p in tmp_path.rglob("metrics.json")])}
    t = 4.302652729911275  # t_{0.975, 2}
    assert rows["merged"]["test/acc"] == pytest.approx(0.72)
    assert rows["merged"]["test/acc ci95"] == pytest.approx(t * 0.02 / 3**0.5)  # sd 0.02
    assert rows["sequential"]["test/acc"] == pytest.approx(0.83)
    assert rows["sequential"]["test/acc ci95"] == pytest.approx(t * 0.03 / 3**0.5)  # sd 0.03
    assert rows["sequential"]["forgetting"] == pytest.approx(0.31)
    # paired Δ vs merged on the same seeds: 0.10, 0.14, 0.09 -> mean 0.11, sd sqrt(0.0007)
    assert rows["sequential"]["Δ test/acc vs merged"] == pytest.approx(0.11)
    assert rows["sequential"]["Δ test/acc vs merged ci95"] == pytest.approx(t * 0.0007**0.5 / 3**0.5)
    assert rows["task_arithmetic"]["n"] == 1 and rows["task_arithmetic"]["test/acc ci95"] is None
    assert rows["merged"]["Δ test/acc vs merged"] is None and rows["merged"]["test/acc_unseen"] is None

    assert report_main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "report.md").read_text()
    assert (
        "| sequential | labeled | no | – | 3 | 0.8300 ± 0.0745 | 0.9300 ± 0.0745 | – | 0.3100 ± 0.0248 | 0.1100 ± 0.0657 |"
        in table
    )
    with (tmp_path / "report" / "report.csv").open() as f:
        assert {r["method"] for r in csv.DictReader(f)} == {"merged", "sequential", "task_arithmetic"}
    plots = ["acc_matrix_0", "lambda_curves_0", "methods_0"]
    assert sorted(p.name for p in (tmp_path / "report").glob("*.p*")) == sorted(
        f"{n}.{ext}" for n in plots for ext in ("pdf", "png")
    )
    for name in plots:
        assert f"]({name}.png)" in table


def test_variants_keep_only_the_overrides_that_differ_between_runs_of_an_experiment():
    assert overrides_of(
        {"overrides": ["++align.shots_per_class=5", "tasks=[[1],[2]]", "merge.lambdas=[0.5,1.0]", "x=a=b"]}
    ) == {"align.shots_per_class": "5", "tasks": "[[1],[2]]", "merge.lambdas": "[0.5,1.0]", "x": "a=b"}
    assert overrides_of({"variant": "data.download=false,tasks=[[1],[2]],~logger"}) == {  # old runs: override_dirname
        "data.download": "false",
        "tasks": "[[1],[2]]",
        "logger": "",
    }
    assert overrides_of({}) == {}
    assert varying_keys([{"a": "1", "b": "2"}, {"a": "1", "b": "3"}, {"a": "1", "c": "4"}]) == ["b", "c"]
    assert varying_keys([{"a": "1"}, {"a": "1"}]) == []

    shared = ["data.download=false", "tasks=[[1],[2]]"]
    runs = [
        {"experiment": "merged", "seed": 0, "overrides": shared},
        {"experiment": "merged", "seed": 1, "overrides": shared},
        {"experiment": "ta+ft", "seed": 0, "overrides": [*shared, "align=ft", "++align.shots_per_class=1"]},
        {"experiment": "ta+ft", "seed": 0, "overrides": [*shared, "align=ft", "align.shots_per_class=5"]},
        {"experiment": "ta+ft", "seed": 0, "overrides": [*shared, "align=ft"]},
        {"experiment": "merged", "seed": 0, "dataset": "kmnist", "overrides": [*shared, "finetune.epochs=2"]},
    ]
    assert variants(runs) == [
        (),
        (),
        (("align.shots_per_class", "1"),),
        (("align.shots_per_class", "5"),),
        (("align.shots_per_class", None),),
        (),
    ]
    assert (
        method_label("ta+ft", (("align.shots_per_class", "5"), ("merge", "ta_sum")))
        == "ta+ft [align.shots_per_class=5, merge=ta_sum]"
    )
    assert method_label("ta+ft", (("align.shots_per_class", None),)) == "ta+ft"
    assert method_label("ta+ft", (("align.shots_per_class", "5"),), short=True) == "ta+ft [shots_per_class=5]"


def test_a_sweep_sharing_overrides_has_clean_names_and_every_delta(tmp_path):
    shared = ["data.download=false", "tasks=[[1],[2]]", "data.pretrain.num_samples=500", "finetune.epochs=3"]
    merged = [0.70, 0.72, 0.74]
    for seed, m in enumerate(merged):
        write_run(tmp_path / f"m{seed}", "merged", seed, m, overrides=shared, strategy="merged")
        write_run(
            tmp_path / f"s{seed}", "sequential", seed, m + 0.1 + 0.01 * seed, overrides=shared, strategy="sequential"
        )
        for k, gain in ((1, 0.02), (5, 0.05)):
            write_run(
                tmp_path / f"a{seed}_{k}",
                "task_arithmetic+ft_classifier",
                seed,
                m + gain + 0.01 * seed,
                strategy="merge",
                overrides=[*shared, "align=ft_classifier", f"++align.shots_per_class={k}"],
                **{"align/method": "ft_classifier"},
            )

    rows = summarize([json.loads(p.read_text()) for p in tmp_path.rglob("metrics.json")])
    assert [r["method"] for r in rows] == [
        "merged",
        "sequential",
        "task_arithmetic+ft_classifier [align.shots_per_class=1]",
        "task_arithmetic+ft_classifier [align.shots_per_class=5]",
    ]
    assert [r["family"] for r in rows] == ["fine-tuning", "fine-tuning", "merging + alignment", "merging + alignment"]
    deltas = {r["method"]: (r["Δ test/acc vs merged"], r["paired seeds"]) for r in rows}
    assert deltas["sequential"] == (pytest.approx(0.11), 3)  # 0.10, 0.11, 0.12
    assert deltas["task_arithmetic+ft_classifier [align.shots_per_class=1]"] == (
        pytest.approx(0.03),
        3,
    )  # 0.02, 0.03, 0.04
    assert deltas["task_arithmetic+ft_classifier [align.shots_per_class=5]"] == (pytest.approx(0.06), 3)

    assert report_main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    table = (tmp_path / "report" / "report.md").read_text()
    assert "## Fashion-MNIST, 2 tasks of 1 class ([1], [2]), shared head, a fresh optimizer per stage" in table
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith(("| method", "| merged")):
            assert not line.endswith("| – |"), line  # every Δ cell filled
    assert "data.download" not in table and "num_samples" not in table


def test_the_merged_baseline_agrees_on_the_keys_its_runs_vary(tmp_path):
    """merged and sequential both swept over finetune.epochs: each sequential row pairs with merged at its epochs."""
    runs = []
    for epochs, base in ((1, 0.70), (2, 0.60)):
        for seed in (0, 1):
            common = {
                "seed": seed,
                "dataset": "mnist",
                "tasks": [[1], [2]],
                "overrides": ["data.download=false", f"finetune.epochs={epochs}"],
            }
            runs.append(common | {"experiment": "merged", "test/acc": base + 0.01 * seed})
            runs.append(common | {"experiment": "sequential", "test/acc": base + 0.2 + 0.03 * seed})
    runs.append(
        {
            "experiment": "ties",
            "seed": 0,
            "dataset": "mnist",
            "tasks": [[1], [2]],
            "test/acc": 0.9,
            "lambda": 1.0,
            "overrides": ["data.download=false", "finetune.epochs=2"],
        }
    )
    rows = {r["method"]: r for r in summarize(runs)}
    assert set(rows) == {
        "merged [finetune.epochs=1]",
        "merged [finetune.epochs=2]",
        "sequential [finetune.epochs=1]",
        "sequential [finetune.epochs=2]",
        "ties",
    }
    assert rows["sequential [finetune.epochs=1]"]["Δ test/acc vs merged"] == pytest.approx(0.21)  # 0.20, 0.22
    assert rows["sequential [finetune.epochs=2]"]["Δ test/acc vs merged"] == pytest.approx(0.21)
    assert rows["ties"]["Δ test/acc vs merged"] == pytest.approx(0.30)  # merged at epochs=2, seed 0: 0.60
    assert rows["merged [finetune.epochs=2]"]["Δ test/acc vs merged"] is None


def test_theta0_row_training_line_and_collapsed_column(tmp_path):
    theta0 = [0.60, 0.62, 0.67]
    for seed, t in enumerate(theta0):
        extra = {"theta0/test/acc": t, "theta0/val/acc": t + 0.3, "theta0/target_val_acc": 0.917}
        write_run(tmp_path / f"m{seed}", "merged", seed, 0.7, strategy="merged", **extra)
        write_run(
            tmp_path / f"t{seed}",
            "task_arithmetic",
            seed,
            t,
            strategy="merge",
            **extra,
            **{
                "merge/collapsed_to_theta0": seed != 1,
                "lambda": 0.0 if seed != 1 else 0.5,
                "lambda_curve": [
                    {"lambda": lam, "val/acc": t + lam / 10, "test/acc": t + lam / 20} for lam in (0.0, 0.5, 1.0)
                ],
            },
        )
    runs = [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("metrics.json"))]
    rows = summarize(runs)
    t = 4.302652729911275
    assert [r["method"] for r in rows] == ["θ0 (pretrained)", "merged", "task_arithmetic"]
    assert rows[0]["family"] == "θ0" and rows[0]["n"] == 3 and rows[0]["seeds"] == [0, 1, 2]
    assert rows[0]["test/acc"] == pytest.approx(0.63)
    assert rows[0]["test/acc ci95"] == pytest.approx(t * statistics.stdev(theta0) / 3**0.5)
    assert rows[0]["Δ test/acc vs merged"] == pytest.approx(-0.07)  # θ0 − merged on the same seeds
    assert (rows[2]["collapsed to θ0"], rows[2]["collapsed of"]) == (2, 3)
    assert rows[1]["collapsed to θ0"] is None
    half = t * statistics.stdev(theta0) / 3**0.5
    assert (
        theta0_training(runs) == "θ0: target validation accuracy 0.917, reached by 2/3 seeds; "
        f"its validation accuracy 0.9300 ± {half:.4f} (mean over the 3 seeds)"
    )

    assert report_main([str(tmp_path), "--out", str(tmp_path / "report")]) == 0
    out = tmp_path / "report"
    table = (out / "report.md").read_text()
    assert "θ0: target validation accuracy 0.917, reached by 2/3 seeds; its validation accuracy 0.9300" in table
    header = next(line for line in table.splitlines() if line.startswith("| method"))
    assert header.split(" | ")[-2] == "collapsed to θ0"
    assert (
        f"| θ0 (pretrained) | – | no | – | 3 | 0.6300 ± {t * statistics.stdev(theta0) / 3**0.5:.4f} | – | – | – | – | -0.0700 ± "
        in table
    )
    assert "| task_arithmetic | none | no | – | 3 | 0.6300 ± " in table and "| 2/3 | -0.0700 ± " in table
    assert (
        "| merged | labeled | no | – | 3 | 0.7000 ± 0.0000 | 0.8000 ± 0.0000 | – | – | – | – |" in table
    )  # no collapse key, no Δ
    with (out / "report.csv").open() as f:
        csv_rows = {r["method"]: r for r in csv.DictReader(f)}
    assert csv_rows["task_arithmetic"]["collapsed to θ0"] == "2" and csv_rows["merged"]["collapsed to θ0"] == ""
    for name in ("methods_0", "lambda_curves_0"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG" and (out / f"{name}.pdf").read_bytes()[
            :4
        ] == b"%PDF"
        assert f"]({name}.png)" in table
    assert not (out / "acc_matrix_0.png").exists()

    curves = lambda_curves(runs, [r["experiment"] for r in runs])
    assert sorted(curves["task_arithmetic"]["points"]) == [0.0, 0.5, 1.0]
    assert sorted(curves["task_arithmetic"]["picked"]) == [
        (0, 0.0, 0.60),
        (1, 0.5, pytest.approx(0.645)),
        (2, 0.0, 0.67),
    ]
    # the same merge before alignment in two rows is drawn once; a one-λ curve (fixed λ) not at all
    aligned = [
        r | {"experiment": "task_arithmetic+ft_classifier"} for r in runs if r["experiment"] == "task_arithmetic"
    ]
    fixed = [{"seed": 0, "lambda": 1.0, "lambda_curve": [{"lambda": 1.0, "val/acc": 0.5, "test/acc": 0.5}]}]
    labels = (
        [r["experiment"] for r in runs] + ["task_arithmetic+ft_classifier [align.shots_per_class=5]"] * 3 + ["fixed"]
    )
    assert list(distinct_curves(lambda_curves(runs + aligned + fixed, labels))) == [
        "task_arithmetic (also task_arithmetic+ft_classifier [align.shots_per_class=5])"
    ]


def test_theta0_from_pretrain_runs_of_old_sweeps(tmp_path):
    runs = [
        {"experiment": "pretrain", "seed": s, "dataset": "mnist", "tasks": [[0], [1]], "test/acc": a, "variant": ""}
        for s, a in ((0, 0.9), (1, 0.8))
    ]
    runs += [
        {
            "experiment": "merged",
            "seed": 0,
            "dataset": "mnist",
            "tasks": [[0], [1]],
            "test/acc": 0.5,
            "variant": "data.download=false",
        }
    ]
    rows = summarize(runs)
    assert [(r["method"], r["n"]) for r in rows] == [("θ0 (pretrained)", 2), ("merged", 1)]
    assert rows[0]["test/acc"] == pytest.approx(0.85) and rows[0]["Δ test/acc vs merged"] == pytest.approx(0.4)


def test_report_without_runs_exits_2(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_report_of_a_real_multirun_whose_runs_share_overrides(tmp_path, mnist_dir):
    """What the issue saw: overrides every run shares (data.download=false, tasks=…, finetune.epochs=…) made every
    method name a variant, lost the merged baseline and blanked the Δ column."""
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "experiment=merged,sequential,task_arithmetic",
        "seed=0,1",
        f"data.data_dir={mnist_dir}",
        "data.download=false",
        "tasks=[[1],[2]]",
        "finetune.epochs=1",
        "pretrain.epochs=2",
        "data.batch_size=64",
        "merge.lambdas=[0.0,0.5,1.0]",
        "logger=none",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={sweep}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in sweep.rglob("metrics.json")]
    assert len(runs) == 6 and all(
        "data.download=false" in r["overrides"] or "data.download=False" in r["overrides"] for r in runs
    )
    rows = {r["method"]: r for r in summarize(runs)}
    assert list(rows) == ["θ0 (pretrained)", "merged", "sequential", "task_arithmetic"]
    by = {(r["experiment"], r["seed"]): r for r in runs}
    for method in ("sequential", "task_arithmetic"):
        assert rows[method]["paired seeds"] == 2
        assert rows[method]["Δ test/acc vs merged"] == pytest.approx(
            statistics.fmean(by[(method, s)]["test/acc"] - by[("merged", s)]["test/acc"] for s in (0, 1))
        )
    assert rows["θ0 (pretrained)"]["test/acc"] == pytest.approx(
        statistics.fmean(by[("merged", s)]["theta0/test/acc"] for s in (0, 1))
    )
    assert report_main([str(sweep)]) == 0
    table = (sweep / "report.md").read_text()
    assert (
        "| task_arithmetic | none | no | – | 2 |" in table and "| sequential | labeled | no | nothing | 2 |" in table
    )  # names without shared overrides


def test_rows_carry_their_data_and_task_id_labels_and_task_id_methods_stand_apart(tmp_path):
    runs = [
        {
            "experiment": "individual",
            "strategy": "individual",
            "seed": 0,
            "dataset": "mnist",
            "tasks": [[1], [2]],
            "test/acc": 0.9,
        },
        {
            "experiment": "sequential",
            "strategy": "sequential",
            "seed": 0,
            "dataset": "mnist",
            "tasks": [[1], [2]],
            "test/acc": 0.5,
        },
        {
            "experiment": "ties",
            "strategy": "merge",
            "merge/data": "none",
            "merge/task_id": False,
            "seed": 0,
            "dataset": "mnist",
            "tasks": [[1], [2]],
            "test/acc": 0.6,
        },
        {
            "experiment": "fisher",
            "strategy": "merge",
            "merge/data": "unlabeled",
            "merge/task_id": False,
            "seed": 0,
            "dataset": "mnist",
            "tasks": [[1], [2]],
            "test/acc": 0.6,
        },
        {
            "experiment": "tall_masks",
            "strategy": "merge",
            "merge/data": "none",
            "merge/task_id": True,
            "seed": 0,
            "dataset": "mnist",
            "tasks": [[1], [2]],
            "test/acc": 0.8,
        },
        {
            "experiment": "ties+procrustes",
            "strategy": "merge",
            "merge/data": "none",
            "merge/task_id": False,
            "align/method": "procrustes",
            "seed": 0,
            "dataset": "mnist",
            "tasks": [[1], [2]],
            "test/acc": 0.7,
        },
    ]
    rows = [(r["method"], r["family"], r["data"], r["task id at test"]) for r in summarize(runs)]
    assert rows == [
        ("sequential", "fine-tuning", "labeled", "no"),
        ("ties", "merging, data-free", "none", "no"),
        ("fisher", "merging, unlabeled data", "unlabeled", "no"),
        ("ties+procrustes", "merging + alignment", "unlabeled", "no"),  # the aligner reads a few unlabeled images
        ("individual", "task id at test", "labeled", "yes"),
        ("tall_masks", "task id at test", "none", "yes"),
    ]


def test_any_experiment_can_be_the_paired_baseline(tmp_path):
    for seed, (m, s) in enumerate(zip([0.70, 0.72, 0.74], [0.80, 0.86, 0.83])):
        write_run(tmp_path / f"{seed}_merged", "merged", seed, m)
        write_run(tmp_path / f"{seed}_sequential", "sequential", seed, s)
    runs = [json.loads(p.read_text()) for p in tmp_path.rglob("metrics.json")]
    rows = {r["method"]: r for r in summarize(runs, baseline="sequential")}
    assert (
        rows["merged"]["Δ test/acc vs sequential"] == pytest.approx(-0.11)
        and rows["sequential"]["Δ test/acc vs sequential"] is None
    )
    assert report_main([str(tmp_path), "--baseline", "sequential"]) == 0
    assert "Δ test/acc vs sequential (paired)" in (tmp_path / "report.md").read_text()


def test_runs_from_different_theta0s_get_a_theta0_row_each(tmp_path):
    runs = []
    for seed in (0, 1):
        for samples, (key, acc) in {"500": ("a", 0.6), "2000": ("b", 0.8)}.items():
            runs.append(
                {
                    "experiment": "merged",
                    "strategy": "merged",
                    "seed": seed,
                    "dataset": "mnist",
                    "tasks": [[1]],
                    "test/acc": acc + 0.05,
                    "overrides": [f"data.pretrain.num_samples={samples}"],
                    "theta0/key": key,
                    "theta0/test/acc": acc + seed / 100,
                }
            )
    theta0 = [(r["method"], r["test/acc"]) for r in summarize(runs) if r["family"] == "θ0"]
    assert theta0 == [
        ("θ0 (pretrained) [data.pretrain.num_samples=2000]", pytest.approx(0.805)),
        ("θ0 (pretrained) [data.pretrain.num_samples=500]", pytest.approx(0.605)),
    ]
    random = [dict(r, **{"theta0/source": "random"}) for r in runs if r["theta0/key"] == "a"]
    assert summarize(random)[0]["method"] == "θ0 (random init)"


def test_a_real_three_seed_multirun_has_one_theta0_row_over_its_seeds(tmp_path, mnist_dir):
    """θ0's cache key holds its seed; the report groups θ0 by its setting (the key without the seed): one row, n = 3."""
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "sweep=class_incremental",
        "data=mnist",
        f"data.data_dir={mnist_dir}",
        "experiment=sequential,merged",
        "seed=0,1,2",
        "logger=none",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={sweep}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in sweep.rglob("metrics.json")]
    assert (
        len(runs) == 6 and len({r["theta0/key"] for r in runs}) == 3 and len({r["theta0/setting"] for r in runs}) == 1
    )
    rows = summarize(runs)
    theta0 = [r for r in rows if r["family"] == "θ0"]
    assert [(r["method"], r["n"], r["seeds"]) for r in theta0] == [("θ0 (random init)", 3, [0, 1, 2])]
    per_seed = {r["seed"]: r["theta0/test/acc"] for r in runs}
    assert theta0[0]["test/acc"] == pytest.approx(statistics.fmean(per_seed.values()))
    assert theta0[0]["test/acc ci95"] == pytest.approx(4.302652729911275 * statistics.stdev(per_seed.values()) / 3**0.5)
    merged = {r["seed"]: r["test/acc"] for r in runs if r["experiment"] == "merged"}
    assert theta0[0]["Δ test/acc vs merged"] == pytest.approx(
        statistics.fmean(per_seed[s] - merged[s] for s in range(3))
    )
