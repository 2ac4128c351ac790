"""Figures written as PNG files: matplotlib without a display, one way of saving them."""

from __future__ import annotations

from pathlib import Path


def figure(columns: int = 1, size: tuple[float, float] = (6.0, 3.5)):
    """(figure, axes) on the Agg backend: servers have no display, and no window pops up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=size)


def save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from mmindex.core.atomic import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:  # a reader never sees half a PNG
        fig.savefig(tmp, dpi=100, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return Path(path)
