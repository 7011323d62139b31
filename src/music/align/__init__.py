"""Re-aligning a merged model's head with its features, from unlabeled samples only.

Every function here takes images or features and the fine-tuned models' outputs, never labels.
"""

from music.align.kernels import fit_head_kl, kl_to_teacher, orthogonal_map, procrustes_report

__all__ = ["fit_head_kl", "kl_to_teacher", "orthogonal_map", "procrustes_report"]
