"""The one reader of the data config: `resolve(cfg)` turns the data group, the root `tasks` and the network into a
DataPlan — the dataset the run reads as a typed value (music.data.refs), its declaration at the resolution it is stored
at, and the tasks as class ids of it. Called once per run (music.run), before validation and any work.

`tasks` may list classes of the data group's dataset (`[[0, 1], [2, 3]]`), or datasets (`[mnist, svhn]`,
`[{data: cifar100, classes: [0, …, 9]}, {data: image_folder, root: /data/x}]`): their composite becomes the run's
dataset, one label space with each part's classes after the previous parts' (music.data.composite), and the tasks are
rewritten as its class ids (the tasks as written stay in `tasks_given`). `data.pretrain.data` puts θ0's own dataset
first. null: one task per class."""

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from music.data.pixels import Resize
from music.data.refs import Catalog, Composite, ImageFolder, Pixels, Source, known_names
from music.data.sources import DatasetSpec
from music.errors import ConfigError
from music.settings import is_int, shown

IMAGE_FOLDER = "image_folder"  # data.name of data=image_folder; in `tasks`: {data: image_folder, root: …}


@dataclass(frozen=True)
class DataPlan:
    source: Source
    spec: DatasetSpec  # at the stored resolution; mean/std None until the images are measured (image files)
    pixels: Pixels
    tasks: list[list[int]]
    pretrain_classes: list[int] | None  # None: the data group's setting (every class unless it names some)

    @property
    def key(self) -> str:
        return self.source.key()

    def dataset_of(self, classes: list[int]) -> str | None:
        """The key of the dataset (a composite's part) all of `classes` belong to; None when they span several."""
        offset = 0
        for part in getattr(self.source, "parts", (self.source,)):
            count = part.classes()
            if all(offset <= c < offset + count for c in classes):
                return part.key()
            offset += count
        return None


def _allowed() -> str:
    return f"one of {', '.join(known_names())}, or {IMAGE_FOLDER} (with root: <folder>)"


def _catalog(setting: str, name) -> Catalog:
    if not isinstance(name, str) or name not in known_names():
        raise ConfigError(setting, shown(name), _allowed())
    return Catalog(name)


def _folder(setting: str, node, data: DictConfig) -> ImageFolder:
    """An image folder from its settings (the data group's, or a task entry's own root/test_fraction/… over them)."""
    node = node if node is not None else data
    root = node.get("root")
    if not isinstance(root, str) or not root:
        raise ConfigError(f"{setting}.root", shown(root), "the folder of an ImageFolder tree")
    names, prompts = node.get("class_names", data.get("class_names")), node.get("prompts", data.get("prompts"))
    return ImageFolder(
        str(Path(root).expanduser()),
        float(node.get("test_fraction", data.get("test_fraction", 0.2))),
        tuple(names) if names is not None else None,
        tuple(prompts) if prompts is not None else None,
    )


def _dataset(setting: str, name, data: DictConfig, node=None) -> Catalog | ImageFolder:
    return _folder(setting, node, data) if name == IMAGE_FOLDER else _catalog(setting, name)


def _task_source(i: int, task, data: DictConfig):
    """(dataset or None for the data group's, classes or None for all of them) of one entry of `tasks`."""
    if isinstance(task, str):
        return _dataset(f"tasks[{i}]", task, data), None
    if isinstance(task, (dict, DictConfig)):
        extra = set(task) - {"data", "classes", "root", "test_fraction", "class_names", "prompts"}
        if "data" not in task or extra or not isinstance(task["data"], str):
            allowed = "{data: <dataset>, classes: [..] (optional)} or {data: image_folder, root: <folder>}"
            raise ConfigError(f"tasks[{i}]", shown(task), allowed)
        classes = task.get("classes")
        return _dataset(f"tasks[{i}]", task["data"], data, task), None if classes is None else list(classes)
    return None, list(task) if isinstance(task, (list, ListConfig)) else task


def backbone_resize(net: DictConfig) -> Resize | None:
    """A pretrained backbone's own eval transform (its class's `eval_resize`), or None for a network trained here."""
    from music.settings import located

    target = located(str(net.get("_target_")))
    if not hasattr(target, "eval_resize"):
        return None
    return target.eval_resize(**{k: v for k, v in net.items() if not k.startswith("_")})


def resolve(cfg: DictConfig) -> DataPlan:
    """The run's DataPlan; `cfg.tasks` becomes the class ids (and `tasks_given` keeps what was written)."""
    data, tasks = cfg.data, cfg.tasks
    pixels = Pixels(backbone_resize(cfg.model.net), Resize(int(data.get("image_size", 32))))
    default = _dataset("data.name", data.name, data)
    pretrain_name = data.pretrain.get("data")
    if pretrain_name is not None and data.pretrain.classes is not None:
        why = "null with data.pretrain.data (θ0 trains on every class of that dataset)"
        raise ConfigError("data.pretrain.classes", shown(data.pretrain.classes), why)
    if tasks is None:
        tasks = [[c] for c in range(default.classes())]
    if not isinstance(tasks, (list, ListConfig)) or not tasks:
        example = "e.g. [[0],[1]] or [[0,1],[2,3]], or datasets: [mnist, svhn]"
        raise ConfigError("tasks", shown(tasks), f"a non-empty list of tasks, each a list of classes, {example}")
    entries = [_task_source(i, t, data) for i, t in enumerate(tasks)]
    pretrain = _dataset("data.pretrain.data", pretrain_name, data) if pretrain_name is not None else None
    if pretrain is None and all(source is None for source, _ in entries):  # classes of the data group's dataset
        plan_tasks = [list(t) for t in tasks]
        if cfg.tasks is None:
            with open_dict(cfg):
                cfg.tasks = plan_tasks
        return DataPlan(default, default.declare(pixels), pixels, plan_tasks, None)
    entries = [(source or default, classes) for source, classes in entries]
    if pretrain is not None and pretrain in {source for source, _ in entries}:
        raise ConfigError(
            "data.pretrain.data", pretrain_name, "a dataset no task is drawn from (θ0's data comes first)"
        )
    parts = list(dict.fromkeys(([pretrain] if pretrain else []) + [source for source, _ in entries]))
    offsets, total = {}, 0
    for part in parts:
        offsets[part], total = total, total + part.classes()
    rewritten = []
    for i, (source, classes) in enumerate(entries):
        count = source.classes()
        if classes is None:
            classes = list(range(count))
        if not isinstance(classes, list) or not all(is_int(c) and 0 <= c < count for c in classes):
            raise ConfigError(f"tasks[{i}].classes", shown(classes), f"class ids in 0..{count - 1} of {source.key()}")
        rewritten.append([offsets[source] + c for c in classes])
    source = Composite(tuple(parts)) if len(parts) > 1 else parts[0]
    pretrain_classes = list(range(pretrain.classes())) if pretrain is not None else None
    with open_dict(cfg):
        if cfg.tasks is not None and rewritten != cfg.tasks:
            cfg.tasks_given = OmegaConf.to_container(cfg.tasks, resolve=True)
        cfg.tasks = rewritten
        if pretrain_classes is not None:
            cfg.data.pretrain.classes = pretrain_classes
    return DataPlan(source, source.declare(pixels), pixels, rewritten, pretrain_classes)
