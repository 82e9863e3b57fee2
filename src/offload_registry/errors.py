"""Every exception the library raises, in one tree.

::

    OffloadRegistryError                  base of everything raised on purpose
    ├── InvalidSessionKeyError (ValueError)   a key or session id that cannot name a safe path
    ├── JournalError (OSError)                a journal or agent file could not be read or written
    ├── ConfigurationError (ValueError)       bad options: unknown URL scheme, bad fsync policy, ...
    └── RegistryClosedError (RuntimeError)    the registry was used after ``close()``

Wrapped errors are always raised ``from`` their cause, so the original traceback survives.
"""

from __future__ import annotations


class OffloadRegistryError(Exception):
    """Base class of every error this library raises deliberately."""


class InvalidSessionKeyError(OffloadRegistryError, ValueError):
    """A session key or session id that cannot be mapped to a safe name inside the data root."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"invalid session key {key!r}: {reason}")


class JournalError(OffloadRegistryError, OSError):
    """A journal, ``state.json`` or ``sessions-registry.json`` could not be read or written."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ConfigurationError(OffloadRegistryError, ValueError):
    """An option the caller passed cannot be used (bad URL scheme, bad policy name, ...)."""


class RegistryClosedError(OffloadRegistryError, RuntimeError):
    """The registry was used after it was closed."""
