"""The one plot helper. matplotlib is optional: without it a suite's plot is a message,
never a failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class NoPlot(RuntimeError):
    """Nothing to plot, or no matplotlib; the message says which."""


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend; NoPlot if it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise NoPlot("matplotlib is not installed: no plot (pip install matplotlib)") from None
    return plt


def save(figure: Any, path: Path, dpi: int = 110) -> str:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return f"wrote {path}"
