"""The error type the CLI turns into one line on stderr and an exit code (no traceback)."""


class DsocrError(Exception):
    """A problem worded for the user: one line that says what is wrong and, if possible, what to do."""

    exit_code = 2


class RunFailure(DsocrError):
    """The command was right but running it failed (no engine left, ...): exit 1, not a usage error."""

    exit_code = 1
