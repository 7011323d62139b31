from music.models.classifier import Classifier
from music.models.linearized import LinearizedNet, plain_state
from music.models.networks import CNN, MLP

__all__ = ["CNN", "MLP", "Classifier", "LinearizedNet", "plain_state"]
