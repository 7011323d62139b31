from music.models.classifier import Classifier
from music.models.networks import CNN, MLP

__all__ = ["CNN", "MLP", "Classifier"]
