"""What reaches the terminal, and how a run ends: one line per failure, other libraries'
chatter kept off stderr unless ``--debug``, and SIGTERM/SIGHUP turned into an exception so
that temporary files are removed on the way out (``backends.files``).

A model's names are untrusted text: a node named ``"a\\nb"`` or carrying terminal escape
codes would otherwise break the one-line contract or repaint the user's terminal.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import warnings
from collections.abc import Iterator

#: libraries whose warnings are about their own internals, not the user's model: the
#: report says what each pass did and left alone
_CHATTY_LOGGERS = ("onnx_ir", "onnxscript", "onnxruntime", "torch", "transformers")
#: ONNX Runtime's logger: 3 = errors, 4 = fatal only (its errors become our one line)
_ORT_FATAL_ONLY = 4
_BREAKS = re.compile(r"\s*[\r\n]+\s*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(text: str) -> str:
    """``text`` on one line: line breaks (ONNX Runtime's multi-line errors) become spaces,
    other control characters (a terminal escape in a node's name) are escaped."""
    text = _BREAKS.sub(" ", text.strip())
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return one_line(super().format(record))


class HeldLog(logging.Handler):
    """Log records kept until the run ends: shown after a success, dropped after a failure,
    whose one line says what matters (a warning that nothing was quantized, printed before
    "no data for model input 'x'", only misleads)."""

    def __init__(self, target: logging.Handler) -> None:
        super().__init__()
        self.target = target
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def show(self) -> None:
        for record in self.records:
            self.target.handle(record)
        self.records.clear()


def configure_logging(*, verbose: bool, debug: bool) -> HeldLog | None:
    """Log lines on stderr, one line each; held until the end (``HeldLog``) unless
    ``verbose`` or ``debug`` asks to see them as they come."""
    stream = logging.StreamHandler()
    stream.setFormatter(_OneLineFormatter("%(levelname)s %(name)s: %(message)s"))
    held = None if verbose or debug else HeldLog(stream)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        handlers=[held or stream], force=True)
    return held


@contextlib.contextmanager
def quiet_libraries(debug: bool) -> Iterator[None]:
    """Python warnings (numpy's RuntimeWarnings, deprecations) and other libraries' log
    lines off, ONNX Runtime's own logger at fatal, unless ``debug``."""
    if debug:
        yield
        return
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    _ort_severity(_ORT_FATAL_ONLY)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _ort_severity(level: int) -> None:
    with contextlib.suppress(ImportError):
        import onnxruntime

        onnxruntime.set_default_logger_severity(level)


class Stopped(BaseException):
    """SIGTERM or SIGHUP arrived; a BaseException so that no ``except Exception`` of a pass
    swallows it, while every ``finally`` and cleanup still runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Inside: SIGTERM and SIGHUP raise ``Stopped`` (only the main thread can install
    handlers; elsewhere the defaults stay)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
