"""matplotlib for every report figure: the Agg backend (no display needed), one style, and `png_bytes`, the one
way a figure becomes PNG bytes (one DPI for every report). Each figure sets its own layout where it is made
(`layout="tight"` or `"constrained"`, or fixed margins where a layout pass over many panels would be slow).
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 100
plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "axes.grid": True, "grid.alpha": 0.3,
                     "legend.fontsize": 10, "legend.framealpha": 0.85})


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes; closes it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()
