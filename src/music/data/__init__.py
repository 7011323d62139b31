from music.data.sources import DATASETS, DatasetSpec, dataset_spec, load_dataset
from music.data.split import Split, make_split
from music.data.task_data import TaskData

__all__ = ["DATASETS", "DatasetSpec", "Split", "TaskData", "dataset_spec", "load_dataset", "make_split"]
