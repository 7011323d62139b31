"""What the console shows of the run's log: a record logged with extra={CONSOLE: False} goes to the log file only."""

import logging

CONSOLE = "console"  # a log record's `extra` flag: False keeps the line out of the console (the log file gets it)


class ConsoleFilter(logging.Filter):
    """The console handler's filter (configs/hydra/default.yaml): drops records logged with extra={CONSOLE: False},
    such as a stage's "training …" line when its progress bar already says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, CONSOLE, True)
