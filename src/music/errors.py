"""Errors a user can fix: the entry point prints their one-line message and exits non-zero."""


class MusicError(Exception):
    """Base of every error caused by the user's input (config, data files, cache)."""


class ConfigError(MusicError):
    def __init__(self, setting: str, value, allowed: str):
        super().__init__(f"{setting}={value!r} is not allowed: {allowed}")
        self.setting = setting


class DataError(MusicError):
    """Missing, truncated or inconsistent dataset files."""
