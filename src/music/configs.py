"""Experiments made from a group's configs, registered in Hydra's ConfigStore instead of a file each:
`experiment=<merge method>` is the one merge experiment (configs/experiment/merge.yaml) with `merge=<method>`, for
every configs/merge/<name>.yaml that says `method: <name>` (a variant such as task_arithmetic_sum is reached with
merge=); `experiment=<continual method>` is sequential fine-tuning (experiment/sequential.yaml) with
`continual=<method>`, for every configs/continual/<name>.yaml but none. A new method is then its code and one config."""

from pathlib import Path

from omegaconf import OmegaConf

CONFIGS = Path(__file__).resolve().parents[2] / "configs"  # the checkout's, beside train.py


def merge_methods(configs: Path = CONFIGS) -> list[str]:
    """The merge configs that are a method of their own (their `method` is their name)."""
    return sorted(p.stem for p in (configs / "merge").glob("*.yaml") if OmegaConf.load(p).get("method") == p.stem)


def continual_methods(configs: Path = CONFIGS) -> list[str]:
    return sorted(p.stem for p in (configs / "continual").glob("*.yaml") if p.stem != "none")


def register_experiments(configs: Path = CONFIGS) -> None:
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    files = {p.stem for p in (configs / "experiment").glob("*.yaml")}  # a file of the same name says more: it wins
    made = {name: {"defaults": ["merge", {"override /merge": name}]} for name in merge_methods(configs)}
    made |= {
        name: {"defaults": ["sequential", {"override /continual": name}], "experiment_name": name}
        for name in continual_methods(configs)
    }
    for name, node in made.items():
        if name not in files:
            store.store(group="experiment", name=name, package="_global_", node=node)
