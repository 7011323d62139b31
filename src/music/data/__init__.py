from music.data.datamodule import MusicDataModule
from music.data.sources import DATASETS, NUM_CLASSES, load_dataset
from music.data.split import Split, make_split

__all__ = ["DATASETS", "NUM_CLASSES", "MusicDataModule", "Split", "load_dataset", "make_split"]
