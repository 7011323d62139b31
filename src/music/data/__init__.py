from music.data.sources import DATASETS, DatasetSpec, load_dataset
from music.data.split import Split, make_split
from music.data.task_data import TaskData

__all__ = ["DATASETS", "DatasetSpec", "Split", "TaskData", "load_dataset", "make_split"]
