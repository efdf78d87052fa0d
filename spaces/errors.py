"""The one error a space or recipe file raises: ``<file>: <key>: <problem>; <fix>`` on one line."""

from __future__ import annotations

from trainable.config import ConfigError


class SpaceError(ConfigError):
    """A space (or recipe) file is wrong; one line: ``<file>: <key>: <problem>; <fix>``.

    A ConfigError, so callers that catch the trainable's errors catch this too."""

    def __init__(self, file: str, key: str, message: str):
        self.file, self.key, self.message = file, key, message
        text = f"{file}: {key}: {message}" if key else f"{file}: {message}"
        super().__init__(" ".join(text.split()))  # always one line, whatever the cause said

    def __reduce__(self):  # Ray pickles a trial's exception to the driver
        return type(self), (self.file, self.key, self.message)


__all__ = ["SpaceError"]
