"""Error types. Every message says what is wrong, where (file, line, argument) and the fix."""

from __future__ import annotations


class ZhplmError(Exception):
    """Base class of every error zhplm raises on purpose."""


class ConfigError(ZhplmError, ValueError):
    """A model or training configuration is invalid or inconsistent."""


class CheckpointError(ZhplmError):
    """A model directory or weights file is missing, corrupt or does not match its config."""


class InputError(ZhplmError, ValueError):
    """User input (text, arguments) cannot be processed as asked."""


class DataError(ZhplmError):
    """A data file is missing, malformed or of the wrong encoding."""
