"""The exceptions lorapipe raises.

Every error a user can cause is a :class:`LorapipeError`; its message names the file, line or field
at fault and what to do about it. The CLI turns them into a red message and exit code 2 (bad input)
or 1 (everything else), never a traceback::

    LorapipeError
     ├── ConfigError     pipeline.yaml is invalid (carries every problem at once)
     ├── DataError       a data file has a bad line, or a stage's input is missing
     ├── ModelError      a base model or adapter cannot be resolved or loaded
     ├── TeacherError    a teacher/judge endpoint or function failed for good
     ├── RegistryError   a registry operation failed, or the store is inconsistent
     │    └── RegistryRefError  a registry name or reference is malformed or names nothing
     └── ServeError      the server cannot start or an adapter cannot be served
"""

from __future__ import annotations


class LorapipeError(Exception):
    """Base class; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ConfigError(LorapipeError):
    """A configuration file or option is invalid. ``problems`` lists each one."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = problems or []
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class DataError(LorapipeError):
    """A data file is malformed; ``problems`` lists ``file:line: what is wrong`` entries."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None):
        self.problems = problems or []
        if self.problems:
            shown = self.problems[:50]
            extra = len(self.problems) - len(shown)
            message = message + "\n" + "\n".join(f"  {p}" for p in shown)
            if extra:
                message += f"\n  ... and {extra} more"
        super().__init__(message)


class ModelError(LorapipeError):
    """A model or adapter could not be resolved or loaded: the spec, file or folder the user named is at
    fault (missing, corrupt, for another base), so it is bad input like a config error."""

    exit_code = 2


class TeacherError(LorapipeError):
    """A teacher or judge failed after its retries."""


class RegistryError(LorapipeError):
    """A registry operation failed."""


class RegistryRefError(RegistryError):
    """A registry name, alias or reference is malformed or names nothing: bad input, like a config error."""

    exit_code = 2


class ServeError(LorapipeError):
    """The server could not start or serve."""
