"""Classifier networks. The contract every network keeps (`Network`): a feature extractor `features` and one linear
`head` on its output, so heads can be swapped, aligned or kept per task; built as `Net(num_classes, input_shape,
**architecture)`, the first two from the dataset's declaration (music.data.sources), the rest from `model.net`, each
checked before any work against its type in the constructor's signature (`Positive`: an integer ≥ 1; music.settings).

A new architecture is one subclass here (or anywhere importable) plus one configs/model/<name>.yaml.
"""

import math

import torch
from torch import Tensor, nn

from music.settings import Positive


class Network(nn.Module):
    """features → head. Subclasses set `self.features` (any module: images → N×width) and `self.head` (nn.Linear)."""

    features: nn.Module
    head: nn.Linear

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class MLP(Network):
    # hidden: widths of the hidden layers ([]: a linear model)
    def __init__(self, num_classes: int, input_shape: list[int], hidden: list[Positive] = (256, 256)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)


class CNN(Network):
    """Conv blocks (3×3 conv, optional BatchNorm, ReLU, 2×2 max-pool) and a hidden linear layer (about 0.4M parameters
    on 28×28 inputs with the defaults)."""

    def __init__(
        self,
        num_classes: int,
        input_shape: list[int],
        channels: list[Positive] = (32, 64),
        hidden: Positive = 128,
        batchnorm: bool = False,
    ):
        super().__init__()
        in_ch, height, width = input_shape
        layers: list[nn.Module] = []
        for ch in channels:
            layers += [
                nn.Conv2d(in_ch, ch, 3, padding=1, bias=not batchnorm),
                *([nn.BatchNorm2d(ch)] if batchnorm else []),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            in_ch, height, width = ch, height // 2, width // 2
        layers += [nn.Flatten(), nn.Linear(in_ch * height * width, hidden), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, num_classes)


class ResNet18(Network):
    """ResNet-18, the CIFAR variant (He et al., 2016, as used on CIFAR by the continual-learning and merging
    literature): a 3×3 stride-1 stem without max-pool, four stages of two torchvision BasicBlocks with `width`, 2·,
    4· and 8·`width` channels (64: the usual 11M parameters), global average pooling."""

    def __init__(self, num_classes: int, input_shape: list[int], width: Positive = 64):
        super().__init__()
        from torchvision.models.resnet import BasicBlock, conv1x1

        layers: list[nn.Module] = [
            nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        in_ch = width
        for stage, stride in enumerate((1, 2, 2, 2)):
            ch = width * 2**stage
            down = (
                None if stride == 1 and in_ch == ch else nn.Sequential(conv1x1(in_ch, ch, stride), nn.BatchNorm2d(ch))
            )
            layers += [BasicBlock(in_ch, ch, stride, down), BasicBlock(ch, ch)]
            in_ch = ch
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(in_ch, num_classes)


class ViT(Network):
    """A small Vision Transformer: torchvision's VisionTransformer (class token, pre-norm encoder) on `patch`×`patch`
    patches of the dataset's images, its own head replaced by this contract's `head` on the class token."""

    def __init__(
        self,
        num_classes: int,
        input_shape: list[int],
        patch: Positive = 4,
        layers: Positive = 4,
        heads: Positive = 4,
        dim: Positive = 128,
        mlp_dim: Positive = 256,
    ):
        super().__init__()
        from torchvision.models import VisionTransformer

        channels, height, width = input_shape
        if height != width or height % patch:
            raise ValueError(f"model.net.patch={patch}: must divide the {height}×{width} square images")
        vit = VisionTransformer(
            image_size=height, patch_size=patch, num_layers=layers, num_heads=heads, hidden_dim=dim, mlp_dim=mlp_dim
        )
        vit.conv_proj = nn.Conv2d(channels, dim, patch, stride=patch)  # torchvision's stem assumes RGB
        vit.heads = nn.Identity()  # vit(x) is then the class token's representation
        self.features = vit
        self.head = nn.Linear(dim, num_classes)


def batchnorm_layers(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_batchnorm(net: nn.Module, images: Tensor, batch_size: int) -> nn.Module:
    """Re-estimate every BatchNorm layer's running statistics on `images` (torch.optim.swa_utils.update_bn: the
    statistics reset, then a cumulative average over the batches in train mode); `net` is left in eval mode."""
    from torch.optim.swa_utils import update_bn

    update_bn(images.split(batch_size), net, device=next(net.parameters()).device)
    return net.eval()
