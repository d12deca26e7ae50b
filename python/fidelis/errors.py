"""Exceptions of fidelis: the CLI's messages, with its exit code as ``exit_code``."""

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes of the ``fidelis`` CLI and of ``python -m fidelis.spark`` (the Rust
    core's ``Error::exit_code``; ``python/tests/test_api.py`` checks them against the CLI)."""

    OK = 0
    INTERNAL = 1
    INPUT = 2
    ALERT = 3
    LOCKED = 4
    OUTPUT = 5
    AFTER_SCORES = 6
    UNDELIVERED = 7


class FidelisError(Exception):
    """A fidelis error (exit code 1 in the CLI: internal)."""

    code = ExitCode.INTERNAL

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.exit_code = int(self.code if exit_code is None else exit_code)


class InputError(FidelisError):
    """Bad input, configuration or model (exit code 2): the message names the file, key,
    column or row."""

    code = ExitCode.INPUT


class LockedError(FidelisError):
    """Another run holds the output lock (exit code 4)."""

    code = ExitCode.LOCKED


class OutputError(FidelisError):
    """An output could not be written (exit code 5); what was there stays."""

    code = ExitCode.OUTPUT


class ScoresWrittenError(FidelisError):
    """The scores were written, then monitoring or the report failed (exit code 6)."""

    code = ExitCode.AFTER_SCORES


class DataWarning(UserWarning):
    """Rows of the input were dropped (missing ids, unparsable timestamps, missing amounts...):
    the message says how many, why, and how many customers lost every row."""
