"""Building what a config node describes (Hydra's instantiate) so that a setting its target refuses — torch's,
Lightning's or Hydra's own check — is one ConfigError naming the key, before any work; and the configured network."""

import warnings

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from music.data.sources import DatasetSpec
from music.errors import ConfigError, MusicError, first_line
from music.settings import declared_settings, located, shown


def _builds(node: dict, build) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # what the target says about its other (default) arguments
            build(OmegaConf.create(node))
        return True
    except Exception:
        return False


def _culprit(node: DictConfig, build) -> str | None:
    """The key of `node` (a Hydra-instantiable config) its target refuses: the one whose removal lets it build, else
    the only one it refuses on its own; None when no single key explains it."""
    plain = OmegaConf.to_container(node, resolve=True)
    keys = [k for k in plain if not k.startswith("_")]
    without = [k for k in keys if _builds({j: v for j, v in plain.items() if j != k}, build)]
    if len(without) == 1:
        return without[0]
    alone = [k for k in keys if not _builds({j: v for j, v in plain.items() if j.startswith("_") or j == k}, build)]
    return alone[0] if len(alone) == 1 else None


def instantiate_checked(setting: str, node: DictConfig, call=lambda made: made, **kwargs):
    """`call(instantiate(node, **kwargs))`; when the target refuses the settings (torch's, Lightning's or Hydra's
    own check), one ConfigError naming the key it refuses (`setting.key`) and what the target said."""
    if located(node.get("_target_")) is None:
        raise ConfigError(
            f"{setting}._target_", node.get("_target_"), "an importable class or function, e.g. torch.optim.SGD"
        )

    def build(config):
        return call(instantiate(config, **kwargs))

    try:
        return build(node)
    except MusicError:  # the target's own one-line refusal (a pretrained backbone's missing weights, …)
        raise
    except Exception as error:
        cause = error.__cause__ or error
        said = first_line(str(cause), type(cause).__name__)
        key = _culprit(node, build)
        where, value = (f"{setting}.{key}", shown(node[key])) if key else (setting, OmegaConf.to_container(node))
        raise ConfigError(where, value, f"{node.get('_target_')} refuses it: {said}") from None


def build_network(cfg: DictConfig, spec: DatasetSpec) -> torch.nn.Module:
    """`model.net` built for the dataset: its number of classes and image shape come from the dataset's declaration
    (music.data.resolve's plan), the architecture from the config (`model.head` is the protocol, not part of it). A network
    that declares a `dataset` argument (a pretrained backbone: its input adapter, CLIP's class names) gets the
    declaration itself."""
    wants = {"dataset": spec} if "dataset" in declared_settings(str(cfg.model.net.get("_target_"))) else {}
    return instantiate_checked(
        "model.net",
        cfg.model.net,
        lambda factory: factory(**wants),
        _partial_=True,
        num_classes=spec.classes,
        input_shape=list(spec.shape),
    )
