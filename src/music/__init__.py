"""music: teach a trained image classifier new tasks, and compare how."""

from music.launching import register_resolvers

__version__ = "0.1.0"

register_resolvers()  # the configs' ${music.…} resolvers, before anything composes them (train.py, tests, notebooks)
