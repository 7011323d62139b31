from music.merging.kernels import task_arithmetic
from music.merging.task_vector import TaskVector

__all__ = ["TaskVector", "task_arithmetic"]
