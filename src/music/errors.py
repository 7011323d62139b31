"""Errors a user can fix: the entry point prints their one-line message and exits with status 2."""

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# whether a user error should show its traceback: the user's HYDRA_FULL_ERROR, kept here by `one_line_errors`
# (which sets HYDRA_FULL_ERROR itself so that Hydra raises its errors instead of printing them)
TRACEBACK_ENV = "MUSIC_TRACEBACK"


def first_line(text: str, default: str = "") -> str:
    """The first non-empty line of `text`, stripped: what a one-line refusal quotes of a library's own words."""
    return next((line.strip() for line in text.splitlines() if line.strip()), default)


class MusicError(Exception):
    """Base of every error caused by the user's input (config, data files, cache)."""


class ConfigError(MusicError):
    def __init__(self, setting: str, value, allowed: str):
        super().__init__(f"{setting}={value!r} is not allowed: {allowed}")
        self.setting, self.value, self.allowed = setting, value, allowed

    def __reduce__(self):  # a launcher's worker sends it back to the launching process
        return ConfigError, (self.setting, self.value, self.allowed)


class DataError(MusicError):
    """Missing, truncated or inconsistent dataset files."""


class Diverged(MusicError):
    """A training stage's loss became NaN or infinite: the run stops there, nothing of it cached or written."""


def traceback_wanted() -> bool:
    return os.environ.get(TRACEBACK_ENV, os.environ.get("HYDRA_FULL_ERROR")) == "1"


def hydra_error_line(error: Exception) -> str:
    """One line of what Hydra refused (a config name it cannot find, a key that does not exist, an override it cannot
    parse): its message and its OmegaConf cause, without the advice to append a key and the search path."""
    parts = [str(error)] + ([str(error.__cause__)] if error.__cause__ is not None else [])
    lines = []
    for part in parts:
        for line in map(str.strip, part.splitlines()):
            if line.startswith(("Available options", "Config search path")):
                break  # Hydra's listings: the options are added below in one line
            if (
                line
                and not line.startswith(("full_key:", "object_type=", "To append", "See https"))
                and line not in lines
            ):
                lines.append(line.rstrip("."))
    options = getattr(error, "options", None)
    if options:
        lines.append(f"one of {', '.join(options)}")
    return ": ".join(lines)


def unset_line(error: Exception) -> str:
    """The one line for a `???` left unset (OmegaConf's MissingMandatoryValue, or an interpolation to one)."""
    found = re.search(r"Missing mandatory value: ([\w.]+)", str(error))
    key = found.group(1) if found else "a setting"
    return f"{key}=??? is not allowed: it has no default, set it ({key}=…)"


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Around `@hydra.main`: what Hydra refuses before a job starts (an unknown config name, a key that does not exist,
    an override it cannot parse) and the project's errors a launcher raises (sbatch refusing a Slurm submission) end
    like the project's own refusals in a job, as one line and exit status 2, instead of several lines and status 1.
    HYDRA_FULL_ERROR=1 still shows every traceback."""
    from hydra.errors import CompactHydraException
    from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

    wanted = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ[TRACEBACK_ENV] = "1" if wanted else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors here instead of printing them
    try:
        yield
    except CompactHydraException as error:
        if wanted:
            raise
        print(f"error: {hydra_error_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    except (MissingMandatoryValue, InterpolationToMissingValueError) as error:  # a `???` left unset (data.root, …)
        if wanted:
            raise
        print(f"error: {unset_line(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    except MusicError as error:  # in the launching process: sbatch's refusal, or a Slurm job's handed back
        if wanted:
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
