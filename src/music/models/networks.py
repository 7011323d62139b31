"""Classifier networks: a feature extractor `features` and a linear `head`, so heads can be swapped or aligned."""

import math

from torch import Tensor, nn


class MLP(nn.Module):
    def __init__(self, hidden: list[int] = (256, 256), num_classes: int = 10, input_shape: list[int] = (1, 28, 28)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class CNN(nn.Module):
    """Two conv blocks and a hidden linear layer (about 0.4M parameters on 28×28 inputs)."""

    def __init__(self, channels: list[int] = (32, 64), hidden: int = 128, num_classes: int = 10, input_shape: list[int] = (1, 28, 28)):
        super().__init__()
        in_ch, size = input_shape[0], input_shape[1]
        layers: list[nn.Module] = []
        for ch in channels:
            layers += [nn.Conv2d(in_ch, ch, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            in_ch, size = ch, size // 2
        layers += [nn.Flatten(), nn.Linear(in_ch * size * size, hidden), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
