"""music: teach a trained image classifier new tasks, and compare how."""

__version__ = "0.1.0"
