# Classifier (the LightningModule) is imported from music.models.classifier: only training needs Lightning
from music.models.linearized import LinearizedNet, plain_state
from music.models.networks import CNN, MLP, Network, ResNet18, ViT
from music.models.pretrained import Clip, Timm

__all__ = ["CNN", "Clip", "MLP", "Timm", "LinearizedNet", "Network", "ResNet18", "ViT", "plain_state"]
