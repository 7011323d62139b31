"""Runs as the report reads them: loaded from metrics.json, grouped by setting, told apart by their variant (the
overrides that differ between runs of one experiment), labelled by the data they read and their family. Pure."""

import json
from collections import defaultdict
from pathlib import Path

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
HEAD_NAMES = {"shared": "shared head", "per_task": "per-task heads"}
MISSING = None  # the value of an override key a run does not set


def load_runs(folders: list[str | Path]) -> list[dict]:
    runs = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("metrics.json")):
            run = json.loads(path.read_text())
            run["_path"] = str(path)
            runs.append(run)
    return runs


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
    dataset = run.get("dataset_title") or str(run.get("dataset"))  # as the dataset's declaration names it
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
