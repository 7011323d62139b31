"""Entry point: `python train.py experiment=<name> [overrides]` (see configs/train.yaml)."""

import gc
import warnings

import hydra
from omegaconf import DictConfig

from music.errors import one_line_errors

# Lightning triggers torch's LeafSpec deprecation warning on every fit, and torch's forward-mode AD (the tangent
# experiments' jvp) its torch.jit.script one when it loads its decompositions; neither is ours to fix.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)


@hydra.main(version_base="1.3", config_path="configs", config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    from music.run import main as run_job  # imported here so `--help` and config errors stay fast

    return run_job(cfg)


if __name__ == "__main__":
    with one_line_errors():
        main()
    # torch and Lightning leave a large object graph: skip the collector's last pass over it at exit (~1 s)
    gc.freeze()
