"""One typed error hierarchy. Every message is one line that names the problem and the fix."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class WorkbenchError(Exception):
    """Base class: the CLI prints ``str(error)`` on one line and exits with code 2."""

    exit_code = 2

    def __str__(self) -> str:  # keep messages to one line whatever the caller passed
        text = str(self.args[0]) if len(self.args) == 1 else super().__str__()
        return " ".join(text.split())


class UnknownModelError(WorkbenchError, KeyError):
    pass


class ModelConfigError(WorkbenchError, ValueError):
    """A builder option the architecture cannot take (input too small, bad class count...)."""


class CheckpointError(WorkbenchError, ValueError):
    """A weights file that cannot be read or does not fit the model."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that would run code or build arbitrary objects when loaded."""


class ConfigError(WorkbenchError, ValueError):
    """A sweep, device profile or option value that is malformed."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ' (did you mean: a, b?)' or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(close)}?)" if close else ""
