"""Exceptions that carry the CLI's exit code and a one-line, actionable message."""

from __future__ import annotations


class OnnxpressError(Exception):
    """Base class; ``exit_code`` is what the CLI returns for it."""

    exit_code = 2


class BadInputError(OnnxpressError):
    """The model, data, option or path given cannot be used (exit code 2)."""

    exit_code = 2


class CheckFailedError(OnnxpressError):
    """A requested numeric check or budget did not hold (exit code 1)."""

    exit_code = 1


class PassFailedError(OnnxpressError):
    """A pass raised or left the IR broken; the message names the pass (exit code 2)."""

    exit_code = 2
