"""Exceptions of fidelis: the CLI's messages, with its exit code as ``exit_code``."""


class FidelisError(Exception):
    """A fidelis error (exit code 1 in the CLI: internal)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class InputError(FidelisError):
    """Bad input, configuration or model (exit code 2): the message names the file, key,
    column or row."""


class LockedError(FidelisError):
    """Another run holds the output lock (exit code 4)."""


class OutputError(FidelisError):
    """An output could not be written (exit code 5); what was there stays."""


class ScoresWrittenError(FidelisError):
    """The scores were written, then monitoring or the report failed (exit code 6)."""


class DataWarning(UserWarning):
    """Rows of the input were dropped (missing ids, unparsable timestamps, missing amounts...):
    the message says how many, why, and how many customers lost every row."""
