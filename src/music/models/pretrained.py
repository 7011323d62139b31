"""Backbones pretrained elsewhere, under the network contract (features → one linear head): timm's image models and
OpenCLIP's image towers, whose head can start zero-shot from the dataset's class names (CLIP's text encoder).

Their input size and normalisation come from the backbone's own config: `InputAdapter` (no parameters) brings the
run's images — held standardised with the dataset's declared statistics — back to pixel scale, to three channels and
to the backbone's input size on the device, then standardises them with the backbone's mean and std.

Weights: timm's `pretrained=true` and OpenCLIP's tags (openai, laion2b_…) come from the Hugging Face hub's cache;
offline, a missing one is one line naming the cache folder to fill and the command that fills it. A local file works
in both libraries' own formats: timm's `weights=<file>` (its pretrained_cfg_overlay file: a state dict as
.safetensors, .pth or .bin), OpenCLIP's `pretrained=<file>` (a state dict or a training checkpoint).
"""

import copy
import json
import logging
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from music.data.pixels import Resize
from music.data.sources import DatasetSpec
from music.errors import ConfigError, first_line
from music.models.networks import Network


class InputAdapter(nn.Module):
    """The run's images → the backbone's input: pixel scale, three channels, its size, its normalisation."""

    def __init__(self, dataset: DatasetSpec, size: tuple[int, int], mean, std, interpolation: str = "bilinear"):
        super().__init__()

        def stat(values):  # per channel, kept out of the state dict: never part of a task vector
            return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)

        self.register_buffer("data_mean", stat(dataset.mean), persistent=False)
        self.register_buffer("data_std", stat(dataset.std), persistent=False)
        self.register_buffer("mean", stat(mean), persistent=False)
        self.register_buffer("std", stat(std), persistent=False)
        self.size, self.mode = tuple(size), "bicubic" if interpolation == "bicubic" else "bilinear"

    def forward(self, x: Tensor) -> Tensor:
        x = x * self.data_std + self.data_mean
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[2:]) != self.size:
            shrinking = x.shape[2] > self.size[0]
            x = F.interpolate(x, size=self.size, mode=self.mode, antialias=shrinking, align_corners=False)
        return (x - self.mean) / self.std


HUB_TIMEOUT_S = 5.0  # the one look at the Hugging Face hub when weights are not in its cache


@contextmanager
def _hub_cache_only():
    """huggingface_hub's offline mode (read at each call, not only at import): the cache alone, no request. The
    libraries' own log lines about the miss are silenced (the miss is answered below, in one line)."""
    from huggingface_hub import constants

    offline, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, True
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = offline
        logging.disable(logging.NOTSET)


def _not_cached(error: BaseException | None) -> bool:
    """Whether a library's error (wrapped or not) is huggingface_hub's: the file is not in the cache."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    while error is not None:
        if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
            return True
        error = error.__cause__ or error.__context__
    return False


def _from_hub(create):
    """`create()` (timm's or OpenCLIP's create_model) from the hub's cache first; where the weights are not there, from
    the network after one short look that the hub answers: offline, huggingface_hub would retry for about a minute
    (45 lines of warnings) before failing. An OSError says the hub is out of reach (the caller's one line)."""
    from huggingface_hub import constants, get_session

    try:
        with _hub_cache_only():
            return create()
    except (RuntimeError, OSError) as error:
        if not _not_cached(error):
            raise
        if constants.HF_HUB_OFFLINE:  # the user's own HF_HUB_OFFLINE=1: the cache was the only place to look
            raise OSError("not in the Hugging Face cache, and HF_HUB_OFFLINE is set") from None
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_TIMEOUT_S)
    except Exception as error:  # any failure to get an answer (DNS, refused, timeout, proxy): out of reach
        why = f"not in the Hugging Face cache, and {constants.ENDPOINT} is out of reach ({first_sentence(error)})"
        raise OSError(why) from None
    return create()


# loaded once per process (a run builds its network many times: θ0, each fine-tune, each merge); copied per build
@lru_cache(maxsize=2)
def _timm_backbone(name: str, pretrained: bool, weights: str | None) -> nn.Module:
    import timm

    overlay = {"file": str(weights)} if weights else None
    return _from_hub(
        lambda: timm.create_model(
            name, pretrained=pretrained or bool(weights), num_classes=0, pretrained_cfg_overlay=overlay
        )
    )


@lru_cache(maxsize=2)
def _clip_model(name: str, pretrained: str | None) -> nn.Module:
    import open_clip

    return _from_hub(lambda: open_clip.create_model(name, pretrained=pretrained).eval())


def _model_config_error(path: str) -> str | None:
    """Why a file is not an OpenCLIP model config (OpenCLIP skips a JSON file without its keys silently), or None."""
    if not Path(path).is_file():
        return "no such file"
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return f"not JSON ({first_sentence(error)})"
    needed = ("embed_dim", "vision_cfg", "text_cfg")
    if not isinstance(config, dict) or not all(key in config for key in needed):
        return f"a JSON object with keys {', '.join(needed)}"
    return None


def first_sentence(error: Exception) -> str:
    """The error's type and its message's first sentence: what a one-line refusal quotes of a library's words."""
    said = first_line(str(error))
    return f"{type(error).__name__}: {said.split('. ')[0][:160]}" if said else type(error).__name__


def _check_covers(weights: str, backbone: nn.Module, name: str) -> None:
    """timm loads a file without its classifier non-strictly (num_classes=0): a file of another network would leave
    the backbone as initialised, silently. Every tensor of the backbone must be in the file, with its shape."""
    from timm.models import load_state_dict

    found = load_state_dict(weights)
    absent = [k for k, v in backbone.state_dict().items() if k not in found or found[k].shape != v.shape]
    if absent:
        why = f"{len(absent)} of its {len(backbone.state_dict())} tensors are not in the file (e.g. {absent[0]})"
        raise ConfigError("model.net.weights", weights, f"a {name} weights file: {why}")


def _weights_missing(setting: str, value, error: Exception, fetch: str) -> ConfigError:
    """One line for a pretrained weight that could not be loaded: where it is looked for and how to get it there."""
    from huggingface_hub.constants import HF_HUB_CACHE

    allowed = (
        f"weights that load ({first_sentence(error)}): with no network, fill the Hugging Face cache "
        f"{HF_HUB_CACHE} where the network is reachable — {fetch} — or give a local weights file"
    )
    return ConfigError(setting, value, allowed)


class Timm(Network):
    """A timm image model (`timm.create_model(name, num_classes=0)`: its pooled features) and a linear head."""

    def __init__(
        self,
        num_classes: int,
        input_shape: list[int],
        dataset: DatasetSpec,
        name: str = "resnet18",
        pretrained: bool = False,
        weights: str | None = None,  # a local weights file in timm's formats (pretrained_cfg_overlay's `file`)
    ):
        super().__init__()
        import timm

        if weights is not None and not Path(weights).is_file():
            raise ConfigError("model.net.weights", weights, "null or a timm weights file (.safetensors, .pth, .bin)")
        try:
            backbone = copy.deepcopy(_timm_backbone(name, pretrained, weights))
        except (RuntimeError, OSError) as error:  # an unknown name, a file it cannot load, the hub out of reach
            if "Unknown model" in str(error):
                raise ConfigError("model.net.name", name, "a timm model name (timm.list_models())") from None
            if weights:
                raise ConfigError(
                    "model.net.weights", weights, f"a {name} weights file ({first_sentence(error)})"
                ) from None
            raise _weights_missing("model.net.pretrained", pretrained, error, self.fetch(name)) from None
        if weights:
            _check_covers(weights, backbone, name)
        config = timm.data.resolve_model_data_config(backbone)
        adapter = InputAdapter(
            dataset, config["input_size"][1:], config["mean"], config["std"], config["interpolation"]
        )
        self.features = nn.Sequential(adapter, backbone)
        self.head = nn.Linear(backbone.num_features, num_classes)

    @staticmethod
    def fetch(name: str) -> str:
        return f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\""

    @staticmethod
    def eval_resize(name: str = "resnet18", **_) -> Resize:
        """timm's eval transform for `name` (resolve_data_config over its pretrained config: input size,
        interpolation, crop_pct), read without building the model: the resolution the run stores its images at."""
        import timm

        pretrained_cfg = timm.models.get_pretrained_cfg(name)
        config = timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg else {})
        return Resize(config["input_size"][-1], config["interpolation"], config["crop_pct"])


class Clip(Network):
    """OpenCLIP's image tower, its features L2-normalised as CLIP compares them, and a linear head: zero-shot (each
    class's row the normalised mean of the normalised text embeddings of its prompts — its dataset's templates filled
    with its name, DatasetSpec.class_prompts — times CLIP's logit scale; bias 0) or random."""

    def __init__(
        self,
        num_classes: int,
        input_shape: list[int],
        dataset: DatasetSpec,
        name: str = "ViT-B-32",
        pretrained: str | None = "openai",  # a tag of open_clip.list_pretrained(), a local file, or null (random)
        model_config: str | None = None,  # a JSON file of an OpenCLIP model config, registered under its file name
        head_init: Literal["zeroshot", "random"] = "zeroshot",
    ):
        super().__init__()
        import open_clip

        # local files first: nothing below reaches for the hub before they are known good
        if model_config is not None:
            why = _model_config_error(model_config)
            if why:
                allowed = f"null or an OpenCLIP model config .json file: {why}"
                raise ConfigError("model.net.model_config", model_config, allowed)
            open_clip.add_model_config(model_config)
        a_file = pretrained and Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors")
        if a_file and not Path(pretrained).is_file():  # not a tag either: no hub lookup for it
            raise ConfigError("model.net.pretrained", pretrained, "a tag or a weights file: no such file")
        if name not in open_clip.list_models():
            raise ConfigError("model.net.name", name, "an OpenCLIP model (open_clip.list_models())")
        try:
            model = _clip_model(name, pretrained)
        except (RuntimeError, OSError) as error:  # a file it cannot load, an unknown tag, the hub out of reach
            if pretrained and Path(pretrained).is_file():
                raise ConfigError(
                    "model.net.pretrained", pretrained, f"{name} weights ({first_sentence(error)})"
                ) from None
            if "not a known tag" in str(error) or ("Pretrained weights" in str(error) and "not found" in str(error)):
                tags = ", ".join(tag for model_name, tag in open_clip.list_pretrained() if model_name == name)
                raise ConfigError("model.net.pretrained", pretrained, f"a file or one of: {tags}") from None
            raise _weights_missing("model.net.pretrained", pretrained, error, self.fetch(name, pretrained)) from None
        visual = model.visual
        size = visual.image_size if isinstance(visual.image_size, tuple) else (visual.image_size,) * 2
        adapter = InputAdapter(dataset, size, visual.image_mean, visual.image_std)
        self.features = nn.Sequential(adapter, copy.deepcopy(visual).train(), Normalize())
        self.head = nn.Linear(open_clip.get_model_config(name)["embed_dim"], num_classes)
        if head_init == "zeroshot":
            with torch.no_grad():
                prompts = dataset.class_prompts()
                self.head.weight.copy_(_zeroshot(name, pretrained, prompts) * model.logit_scale.exp())
                self.head.bias.zero_()

    @staticmethod
    def eval_resize(name: str = "ViT-B-32", model_config: str | None = None, **_) -> Resize:
        """open_clip's preprocess for `name`: the shorter side to its image size, bicubic, then the centre crop (its
        resize_mode 'shortest'), read from its model config without building the model."""
        import open_clip

        if model_config is not None and Path(model_config).is_file():
            try:
                open_clip.add_model_config(model_config)
            except ValueError as error:  # json's decoder error: the constructor's check names the file
                raise ConfigError(
                    "model.net.model_config", model_config, f"an OpenCLIP model config .json file ({error})"
                ) from None
        config = open_clip.get_model_config(name)
        if config is None:
            raise ConfigError("model.net.name", name, "an OpenCLIP model (open_clip.list_models())")
        size = config["vision_cfg"]["image_size"]
        return Resize(size if isinstance(size, int) else size[0], "bicubic", 1.0)

    @staticmethod
    def fetch(name: str, tag) -> str:
        return f"python -c \"import open_clip; open_clip.create_model('{name}', pretrained='{tag}')\""


class Normalize(nn.Module):
    """L2 normalisation of the image embedding, as CLIP compares images with texts."""

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1)


@lru_cache(maxsize=4)
@torch.no_grad()
def _zeroshot(name: str, pretrained: str | None, prompts: tuple[tuple[str, ...], ...]) -> Tensor:
    """Per class, the mean of its prompts' L2-normalised text embeddings, L2-normalised (classes × embedding): how
    CLIP's authors build a zero-shot classifier from several templates."""
    import open_clip

    flat = [prompt for mine in prompts for prompt in mine]
    embedded = F.normalize(_clip_model(name, pretrained).encode_text(open_clip.get_tokenizer(name)(flat)), dim=-1)
    per_class = embedded.split([len(mine) for mine in prompts])
    return F.normalize(torch.stack([e.mean(0) for e in per_class]), dim=-1)
