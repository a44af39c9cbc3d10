"""The robustness study's cost–robustness frontier: what each recipe buys per step it costs.

Reads the ``frontier`` of the ``results.json`` that benchmarks/robustness_study.py's report
step writes (benchmarks/study_frontier.py: per arm, the step-time ratio against standard
and the changes against standard, paired by seed, as mean, sample std and values). Four
panels share the x axis, the step-time ratio against a standard step: the PGD accuracy
gain at each radius, the DeepWordBug gain and the clean accuracy change, all in points
against standard. One point per arm, error bars ± one sample standard deviation over
seeds in both directions; the default is a star. The target region is shaded: step time
≤ the target's ratio, and at the larger radius a gain ≥ the target's share of the
default's, for clean accuracy within the band around the default's. The PNG carries the
plotted numbers (``alum.plotting``).

    python -m alum.finetune.frontier_figure results.json frontier.png
"""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, List, Optional

from alum.plotting import pyplot, results_to_png_main, save_png


def panels_of(front: Dict[str, Any]) -> List[tuple]:
    """(frontier key, panel title) of each panel, the radii in the study's order."""
    out = [(f"r{i + 1}", f"PGD r={r:g}: gain over standard")
           for i, r in enumerate(front["radii"])]
    return out + [("word", "DeepWordBug: gain over standard"),
                  ("clean", "clean accuracy: change against standard")]


def target_region(front: Dict[str, Any]) -> Dict[str, Any]:
    """The target in the plotted units (points): x bound, the larger radius's y floor and
    the clean panel's y band; floor and band are None without the default's point."""
    t, default = front["target"], front["arms"].get(front["default"])
    out: Dict[str, Any] = {"max_step_ratio": t["max_step_ratio"], "larger": front["larger"],
                           "gain_floor": None, "clean_band": None}
    if default is not None and default[front["larger"]]["mean"] is not None:
        out["gain_floor"] = 100 * t["share_of_default"] * default[front["larger"]]["mean"]
        c = 100 * default["clean"]["mean"]
        out["clean_band"] = [c - 100 * t["clean_band"], c + 100 * t["clean_band"]]
    return out


def plot_frontier(results_json: str, png: str) -> str:
    """Draws the frontier in ``results_json`` to ``png``; returns ``png``."""
    with open(results_json) as fh:
        results = json.load(fh)
    front = results.get("frontier") or {}
    arms = front.get("arms") or {}
    if not arms:
        raise ValueError(f"{results_json}: no arm with seeds paired with standard in "
                         "'frontier'")
    panels = panels_of(front)
    region = target_region(front)
    plt = pyplot()
    fig, axes = plt.subplots(2, (len(panels) + 1) // 2, figsize=(11, 8.5), sharex=True)
    axes = axes.ravel()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xmax = max(p["step_ratio"]["mean"] + p["step_ratio"]["std"] for p in arms.values())
    drawn: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for ax, (key, title) in zip(axes, panels):
        ax.axvspan(0.9, region["max_step_ratio"], color="tab:green", alpha=0.07, zorder=0)
        if key == region["larger"] and region["gain_floor"] is not None:
            ax.fill_between([0.9, region["max_step_ratio"]], region["gain_floor"],
                            region["gain_floor"] + 100, color="tab:green", alpha=0.18,
                            zorder=0, label="target")
        if key == "clean" and region["clean_band"] is not None:
            lo, hi = region["clean_band"]
            ax.fill_between([0.9, region["max_step_ratio"]], lo, hi, color="tab:green",
                            alpha=0.18, zorder=0, label="target")
        ax.axhline(0, color="k", linewidth=0.6)
        ys = []  # the y range: every error bar and the target's bounds
        if key == region["larger"] and region["gain_floor"] is not None:
            ys.append(region["gain_floor"])
        if key == "clean" and region["clean_band"] is not None:
            ys += region["clean_band"]
        for i, (arm, p) in enumerate(arms.items()):
            s = p.get(key) or {}
            if s.get("mean") is None:
                continue
            x, xerr = p["step_ratio"]["mean"], p["step_ratio"]["std"]
            y, yerr = 100 * s["mean"], 100 * s["std"]
            is_default = arm == front["default"]
            ax.errorbar([x], [y], xerr=[xerr], yerr=[yerr], capsize=2, zorder=3,
                        fmt="*" if is_default else "o", markersize=13 if is_default else 6,
                        color=colours[i % len(colours)], label=arm)
            ax.annotate(f"{arm} (n={p['n']})", (x, y), textcoords="offset points",
                        xytext=(5, 4), fontsize=7)
            ys += [y - yerr, y + yerr]
            drawn.setdefault(title, {})[arm] = {"x": x, "xerr": xerr, "y": y, "yerr": yerr,
                                                "n": p["n"]}
        if ys:
            pad = 0.15 * max(1.0, max(ys) - min(ys))
            ax.set_ylim(min(min(ys), 0) - pad, max(max(ys), 0) + pad)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("points")
        ax.grid(alpha=0.3, zorder=0)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-2:]:
        ax.set_xlabel("step time × standard (seconds per step, same seed)")
    axes[0].set_xlim(0.9, max(region["max_step_ratio"], xmax) * 1.15)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("Cost–robustness frontier: mean over seeds ± sample std, paired with "
                 f"standard; star = the default ({front['default']}); shaded: ≤ "
                 f"{region['max_step_ratio']:g}× and the target", fontsize=10)
    data = {"panels": [title for _, title in panels], "points": drawn,
            "default": front["default"], "target": region}
    return save_png(fig, png, data)


def main(argv: Optional[List[str]] = None) -> int:
    return results_to_png_main(sys.argv[1:] if argv is None else argv, plot_frontier,
                               "frontier_figure", __doc__, (ValueError, OSError, KeyError))


if __name__ == "__main__":
    sys.exit(main())
