"""Errors of the capture parsers."""

from __future__ import annotations

from tuning.errors import ConfigError


class CaptureFormatError(ConfigError):
    """A capture is not in a form its parser can read; the message says what to capture."""
