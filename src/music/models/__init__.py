# Classifier (the LightningModule) is imported from music.models.classifier: only training needs Lightning
from music.models.linearized import LinearizedNet, plain_state
from music.models.networks import CNN, MLP

__all__ = ["CNN", "MLP", "LinearizedNet", "plain_state"]
