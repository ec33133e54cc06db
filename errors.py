"""Exceptions that carry the CLI's exit code and a one-line, actionable message.

Exit codes (DESIGN.md): 0 success, 1 a requested check or budget failed, 2 the user's input
cannot be used, 3 a bug of ours ("internal error"), including a pass that broke the model.
"""

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


class InternalError(OnnxpressError):
    """A bug in onnxpress, never the user's input (exit code 3)."""

    exit_code = 3


class PassFailedError(InternalError):
    """A pass raised, left the IR broken or wrote a model that does not pass onnx.checker or
    load in ONNX Runtime where its input did; the message names the pass (exit code 3)."""


class RuntimeRefusedError(BadInputError):
    """ONNX Runtime would not load (``loading``) or run a model (exit code 2). Inside a pass
    on a model that loaded before it, a refused load is the pass's doing: the manager
    turns it into a ``PassFailedError`` naming the pass."""

    def __init__(self, message: str, *, loading: bool, reason: str = "") -> None:
        super().__init__(message)
        self.loading = loading
        self.reason = reason or message  # ONNX Runtime's own words
