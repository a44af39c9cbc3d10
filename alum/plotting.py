"""Figures as PNG files that carry the numbers they were drawn from.

Every figure of the project (``alum-plot``, ``alum-robustness --plot``, the robustness
study's figure) is drawn with matplotlib's Agg backend, which needs no display, and saved
through :func:`save_png`. The PNG gets a text chunk, ``alum-data``, holding the plotted
series as JSON: :func:`read_png_data` reads them back, so a test (or a person) can check
what a figure shows against its inputs without image recognition, and the numbers of any
figure stay available after the run directory that produced it is gone.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Dict, List, Sequence, Tuple, Type

from .atomic_write import atomic_path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_KEY = "alum-data"


def pyplot():
    """matplotlib's pyplot on the Agg backend (a file renderer: no display, no GUI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str, data: Dict[str, Any], dpi: int = 100) -> str:
    """Writes ``fig`` to ``path`` as a PNG with ``data`` (JSON-serialisable) in its
    ``alum-data`` text chunk, and closes the figure. The file appears complete or not at
    all (``alum.atomic_write``). Returns ``path``."""
    if not path.lower().endswith(".png"):
        raise ValueError(f"{path}: the figure is written as PNG; give a path ending in .png")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"{path}: the folder {directory} does not exist")
    text = json.dumps(data, allow_nan=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, metadata={DATA_KEY: text},
                        bbox_inches="tight")
    finally:
        pyplot().close(fig)
    return path


def read_png_data(path: str) -> Dict[str, Any]:
    """The series a figure written by :func:`save_png` was drawn from.

    Raises ``ValueError`` naming the file when it is not a PNG or has no such chunk."""
    with open(path, "rb") as fh:
        if fh.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            raise ValueError(f"{path}: not a PNG file")
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        text = image.text.get(DATA_KEY)
    if text is None:
        raise ValueError(f"{path}: no {DATA_KEY!r} chunk (not written by alum.plotting)")
    return json.loads(text)


def results_to_png_main(argv: Sequence[str], plot: Callable[[str, str], str], prog: str,
                        doc: str, errors: Tuple[Type[BaseException], ...] = (ValueError, OSError)
                        ) -> int:
    """The command line of a figure drawn from a results file: ``prog RESULTS.json OUT.png``
    runs ``plot`` and prints the PNG's path; a bad input is one line on stderr, exit 2."""
    args: List[str] = list(argv)
    if len(args) != 2 or args[0] in ("-h", "--help"):
        print(doc)
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        print(plot(args[0], args[1]))
    except errors as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0
