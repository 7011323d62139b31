"""Tasks that are datasets: several datasets as one, the merging literature's setting (each task a whole dataset, or
a class subset of one, scored by its own head).

`tasks: [mnist, fashion_mnist, svhn]` (or `[{data: cifar100, classes: [0, …, 9]}, …]`) makes the run's dataset the
composite `mnist+fashion_mnist+svhn`: one label space with each part's classes after the previous parts' (MNIST 0–9,
Fashion-MNIST 10–19, SVHN 20–29), every image brought to the largest part's shape (grey images repeated on three
channels, smaller ones resized bilinearly), and the tasks rewritten as lists of those class ids. Everything downstream
(split, cache keys, merging, metrics, report) then sees one dataset, declared like the others."""

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from music.errors import ConfigError
from music.settings import is_int, shown

SEPARATOR = "+"


def conform(images: torch.Tensor, shape: tuple[int, int, int], chunk: int = 8192) -> torch.Tensor:
    """uint8 images N×C×H×W brought to `shape`: one channel repeated to three, resized bilinearly (antialiased when
    shrinking) in chunks, rounded back to uint8."""
    channels, height, width = shape
    if images.shape[1] == 1 and channels == 3:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[1] != channels:
        raise ValueError(f"cannot bring {images.shape[1]}-channel images to {channels} channels")
    if tuple(images.shape[2:]) == (height, width):
        return images.contiguous()
    shrinking = images.shape[2] > height or images.shape[3] > width
    return torch.cat(
        [
            F.interpolate(part.float(), size=(height, width), mode="bilinear", antialias=shrinking, align_corners=False)
            .round_()
            .clamp_(0, 255)
            .to(torch.uint8)
            for part in images.split(chunk)
        ]
    )


def _task_source(i: int, task, default: str) -> tuple[str, list[int] | None]:
    """(dataset, classes or None for all of them) of one entry of `tasks`."""
    if isinstance(task, str):
        return task, None
    if isinstance(task, (dict, DictConfig)):
        extra = set(task) - {"data", "classes"}
        if "data" not in task or extra or not isinstance(task["data"], str):
            raise ConfigError(f"tasks[{i}]", shown(task), "{data: <dataset>, classes: [..] (optional)}")
        classes = task.get("classes")
        return task["data"], None if classes is None else list(classes)
    return default, list(task) if isinstance(task, (list, ListConfig)) else task


def dataset_tasks(tasks, default: str, pretrain: str | None = None) -> tuple[str, list] | None:
    """(composite dataset name, tasks as class ids of it) when some task names a dataset or θ0 trains on another
    dataset (`pretrain`, the composite's first part); None when every task is a list of classes of `default` (the data
    group's dataset) and nothing needs rewriting."""
    from music.data.sources import dataset_spec

    if not isinstance(tasks, (list, ListConfig)):
        return None
    if pretrain is None and all(isinstance(t, (list, ListConfig)) for t in tasks):
        return None
    sources = [_task_source(i, t, default) for i, t in enumerate(tasks)]
    if pretrain is not None and pretrain in {name for name, _ in sources}:
        raise ConfigError("data.pretrain.data", pretrain, "a dataset no task is drawn from (θ0's data comes first)")
    parts = list(dict.fromkeys(([pretrain] if pretrain else []) + [name for name, _ in sources]))
    offsets, total = {}, 0
    for name in parts:
        where = next((f"tasks[{j}]" for j, (n, _) in enumerate(sources) if n == name), "data.pretrain.data")
        if SEPARATOR in name:
            raise ConfigError(where, name, "one dataset per task (list the datasets as separate tasks)")
        try:
            offsets[name], total = total, total + dataset_spec(name).classes
        except ConfigError as error:
            raise ConfigError(where, name, error.allowed) from None
    rewritten = []
    for i, (name, classes) in enumerate(sources):
        count = dataset_spec(name).classes
        if classes is None:
            classes = list(range(count))
        if not isinstance(classes, list) or not all(is_int(c) and 0 <= c < count for c in classes):
            raise ConfigError(f"tasks[{i}].classes", shown(classes), f"class ids in 0..{count - 1} of {name}")
        rewritten.append([offsets[name] + c for c in classes])
    return SEPARATOR.join(parts), rewritten


def resolve_dataset_tasks(cfg: DictConfig) -> None:
    """Rewrite `cfg` in place when its tasks name datasets or θ0 trains on another dataset (data.pretrain.data):
    data.name becomes their composite, tasks its class ids, and θ0's classes the other dataset's (the composite's
    first part). The tasks as written stay in `tasks_given`, for the record."""
    from music.data.sources import dataset_spec

    pretrain = cfg.data.pretrain.get("data")
    if pretrain is not None and cfg.data.pretrain.classes is not None:
        why = "null with data.pretrain.data (θ0 trains on every class of that dataset)"
        raise ConfigError("data.pretrain.classes", shown(cfg.data.pretrain.classes), why)
    found = dataset_tasks(cfg.tasks, cfg.data.name, pretrain)
    if found is None:
        return
    name, tasks = found
    with open_dict(cfg):
        cfg.tasks_given = OmegaConf.to_container(cfg.tasks, resolve=True)
        cfg.data.name = name
        cfg.tasks = tasks
        if pretrain is not None:
            cfg.data.pretrain.classes = list(range(dataset_spec(pretrain).classes))


def pooled_statistics(means: list[tuple[float, ...]], stds: list[tuple[float, ...]], channels: int) -> tuple:
    """Per channel, the mean and standard deviation of an equal mixture of the parts (each part's declared statistics,
    a grey part's on every channel): a fixed normalisation declared from the parts, no pass over the images."""
    means = [m * channels if len(m) == 1 else m for m in means]
    stds = [s * channels if len(s) == 1 else s for s in stds]
    mean = [sum(m[c] for m in means) / len(means) for c in range(channels)]
    second = [sum(s[c] ** 2 + m[c] ** 2 for m, s in zip(means, stds)) / len(means) for c in range(channels)]
    std = [max(second[c] - mean[c] ** 2, 0.0) ** 0.5 for c in range(channels)]
    return tuple(round(v, 4) for v in mean), tuple(round(v, 4) for v in std)


def spec(name: str):
    """The composite's declaration (a music.data.sources.DatasetSpec) from its parts'."""
    from music.data.sources import DatasetSpec, dataset_spec

    parts = name.split(SEPARATOR)
    specs = [dataset_spec(part) for part in parts]
    shape = tuple(max(spec.shape[i] for spec in specs) for i in range(3))
    mean, std = pooled_statistics([s.mean for s in specs], [s.std for s in specs], shape[0])
    return DatasetSpec(
        SEPARATOR.join(s.torchvision for s in specs),
        sum(spec.classes for spec in specs),
        shape,
        mean,
        std,
        lambda folder, declared: None,  # read part by part (load)
        {},
        "datasets",
        ".",
        title=" + ".join(spec.name for spec in specs),
        # the augmentation every part allows: the smallest crop padding, flips only if every part flips
        augment=(min(s.augment[0] for s in specs), all(s.augment[1] for s in specs)),
        class_names=tuple(n for spec in specs for n in spec.names),
        parts=tuple(parts),
    )


def load(spec, data_dir, download: bool) -> dict:
    """Each part read as itself, brought to the composite's shape, its labels after the previous parts' classes."""
    from music.data.sources import dataset_spec, load_dataset

    loaded, offset = [], 0
    for part in spec.parts:
        splits = load_dataset(part, data_dir, download)
        loaded.append({k: (conform(x, spec.shape), y + offset) for k, (x, y) in splits.items()})
        offset += dataset_spec(part).classes
    return {k: (torch.cat([p[k][0] for p in loaded]), torch.cat([p[k][1] for p in loaded])) for k in ("train", "test")}
