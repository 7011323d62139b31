from music.merging import kernels
from music.merging.task_vector import TaskVector, stack

__all__ = ["TaskVector", "kernels", "stack"]
