"""``alum-robustness --plot``: the metric against the attack radius, one curve per model.

Takes the results ``alum-robustness`` returns (and writes with ``--json``), one per model:
each curve starts at radius 0 with the clean metric and has one point per ``--radius``
of the embedding-space attack on the ``--eval`` file. Classification plots accuracy, QA
the F1. The PNG carries the plotted numbers (``alum.plotting``).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

from alum.plotting import pyplot, save_png


def metric_key(result: Dict[str, Any]) -> str:
    """The plotted metric: accuracy, or F1 for extractive QA."""
    return "f1" if result.get("metric") == "exact_match/f1" else "accuracy"


def curve(result: Dict[str, Any]) -> List[Tuple[float, float]]:
    """(radius, metric) points of one model's ``eval`` file: the clean value at 0, then
    each attacked radius (a radius-0 attack equals the clean value and is not repeated)."""
    key = metric_key(result)
    points: Dict[float, float] = {}
    for row in result["results"]:
        if row["dataset"] != "eval" or row.get("radius") is None or key not in row:
            continue  # other files are evaluated clean; the word attack has no radius
        radius = float(row["radius"])
        if row["attack"] == "clean" or radius not in points:
            points[radius] = float(row[key])
    return sorted(points.items())


def _labels(results: List[Dict[str, Any]]) -> List[str]:
    short = [os.path.basename(os.path.normpath(r["model"])) for r in results]
    return short if len(set(short)) == len(short) else [r["model"] for r in results]


def plot_robustness(results: List[Dict[str, Any]], path: str) -> str:
    """Draws one curve per result to ``path`` (a .png); returns ``path``."""
    if not results:
        raise ValueError("no results to plot")
    curves = {label: curve(r) for label, r in zip(_labels(results), results)}
    if not any(len(points) > 1 for points in curves.values()):
        raise ValueError("nothing to plot against the radius: give at least one --radius > 0")
    attack = results[0]["attack"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, points in curves.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, "o-", label=label)
    unit = " (fraction of each token's embedding norm)" if attack.get("relative") else ""
    ax.set_xlabel(f"attack radius, {attack['norm']} norm{unit}")
    key = metric_key(results[0])
    ax.set_ylabel(key.replace("_", " "))
    ax.set_title(f"{key} under embedding-space PGD ({attack['steps']} steps)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    data = {"metric": key, "curves": {label: [list(p) for p in points]
                                      for label, points in curves.items()}}
    return save_png(fig, path, data)
