"""music: teach a trained image classifier new tasks, and compare how."""

from music.configs import register_experiments
from music.launching import register_resolvers

__version__ = "0.1.0"

# before anything composes the configs (train.py, tests, notebooks): their ${music.…} resolvers, and
# experiment=<merge or continual method> (music.configs)
register_resolvers()
register_experiments()
