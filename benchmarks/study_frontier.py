"""The robustness study's cost–robustness frontier and its rule for the default recipe.

The cheaper ALUM variants are arms of benchmarks/robustness_study.py (``VARIANT_OPTIONS``),
each at the default's settings (the 5% ball, α = 0.5) with one thing changed:

* ``var-rdrop``: ``--adv-direction none``: δ = 0, the symmetric KL between two dropout
  passes (R-Drop), no ascent pass;
* ``var-random``: ``--adv-direction random``: δ drawn in the ball, no ascent pass (K = 0);
* ``var-free``: ``--adv-direction free``: δ from the gradient the clean backward already
  computes;
* ``var-half-batch``: ``--adv-fraction 0.5``: the adversarial term on half of each batch's
  sequences.

Each run's cost is measured by the study itself: a record holds its optimizer steps and
three times: the training's CPU time that alum-finetune reports (``train_cpu_seconds``,
all its threads), the CPU time of the whole alum-finetune command as the study measured
it (``command_cpu_seconds``: start-up and loading included) and the training's wall time
(``train_seconds``). An arm's **step-time ratio** is its seconds per step over standard's
at the same seed, on the first of those bases that both records have (``step_basis``
says which: ``cpu``, ``command-cpu``, ``wall``). CPU time first, because wall time on a
shared machine measures the other jobs as much as the step: the study's first records,
run beside other work, give the default 1.9 ± 0.7× a standard step in wall time against
2.8× measured in isolation. Its gains are paired by
seed against ``standard`` (clean accuracy change, PGD gain at each radius, DeepWordBug
gain). ``frontier`` gathers those per arm; ``target_verdicts`` says how far each variant
is from the target (≤ 2.1× a standard step, ≥ 80% of the default's gain at the larger
radius, clean accuracy within ±0.5 points of the default's); ``choose_default`` applies
the written rule of docs/robustness_study.md over every data set's frontier, and
``budget_picks`` what that rule picks at each cost bound (which recipe at which budget).
"""
from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import asdict, dataclass, replace
from typing import Callable, Dict, List, Optional, Tuple

from study_datasets import record_dataset

# The default ALUM fine-tuning, explicit: relative-finetune (5% ball) at alpha 0.5.
DEFAULT_ALUM = ["--alum", "--alum-preset", "relative-finetune", "--adv-alpha", "0.5"]
DEFAULT_ARM = "alum-half-alpha"
# Explicit options over the default's rather than the presets of the same names (rdrop,
# random-start, free, half-batch): a run keeps meaning what its records mean if a preset
# changes.
VARIANT_OPTIONS = {
    "var-rdrop": DEFAULT_ALUM + ["--adv-direction", "none"],
    "var-random": DEFAULT_ALUM + ["--adv-direction", "random"],
    "var-free": DEFAULT_ALUM + ["--adv-direction", "free"],
    "var-half-batch": DEFAULT_ALUM + ["--adv-fraction", "0.5"],
}
# The recipes of the frontier: the baseline, the default, the two heavier recipes of the
# study (α = 1; the 10% ball) and the variants. ``--arms frontier`` runs these.
FRONTIER_ARMS = ("standard", DEFAULT_ARM, "alum", "alum-relative", *VARIANT_OPTIONS)
# Each variant is also paired with the default (the study pairs every arm with standard).
FRONTIER_PAIRS = [(arm, DEFAULT_ARM) for arm in VARIANT_OPTIONS]
# The target: a variant at most this many standard steps' time ...
TARGET_STEP_RATIO = 2.1
# ... keeping at least this share of the default's PGD gain at the larger radius ...
TARGET_SHARE_OF_DEFAULT = 0.8
# ... with clean accuracy within this much (a fraction: 0.5 points) of the default's.
TARGET_CLEAN_BAND = 0.005
GAINS = ("r1", "r2", "word")  # the attacked metrics: PGD at each radius, DeepWordBug
# Below any difference of two accuracies over a real evaluation set.
FLOAT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class DefaultRule:
    """The rule that picks the default recipe from the frontiers of every data set
    (docs/robustness_study.md, "The rule for the default")."""

    clean_floor: float = -0.01
    """Lowest allowed mean clean-accuracy change against standard on any data set (a
    fraction: -0.01 = one point below standard)."""
    max_step_ratio: float = 3.5
    """Highest allowed mean step-time ratio against standard on any data set."""
    min_seeds: int = 3
    """Fewest seeds paired with standard on every data set for a recipe to be ranked."""
    tie: float = 0.005
    """Recipes whose score is within this of the best (a fraction: 0.5 points) tie; the
    cheapest of them (lowest worst-case step-time ratio) is picked."""

    def __post_init__(self):
        if self.min_seeds < 1:
            raise ValueError(f"DefaultRule.min_seeds: at least 1, got {self.min_seeds}")
        if self.max_step_ratio <= 0:
            raise ValueError(f"DefaultRule.max_step_ratio: positive, got {self.max_step_ratio}")
        if self.tie < 0:
            raise ValueError(f"DefaultRule.tie: not negative, got {self.tie}")


def spread(values: List[float]) -> Dict:
    """Mean, sample standard deviation (0 for one value) and the values themselves."""
    return {"mean": statistics.mean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def metric_getters(n_radii: int) -> Dict[str, Callable[[Dict], Optional[float]]]:
    """The record's value of each metric: clean, r1..rn (PGD), word (DeepWordBug)."""
    out: Dict[str, Callable[[Dict], Optional[float]]] = {"clean": lambda r: r["clean"]}
    for i in range(n_radii):
        out[f"r{i + 1}"] = lambda r, i=i: r["attacked"][i]
    out["word"] = lambda r: r["word"]["accuracy"] if r.get("word") else None
    return out


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished (waited-for) children."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# The bases of a step's time, best first: (record field, name in the tables).
STEP_BASES = (("train_cpu_seconds", "cpu"), ("command_cpu_seconds", "command-cpu"),
              ("train_seconds", "wall"))


def step_ratio(run: Dict, base: Dict) -> Tuple[float, str]:
    """(``run``'s seconds per step over ``base``'s, the basis): on the first basis of
    ``STEP_BASES`` that both records have."""
    key, name = next((k, n) for k, n in STEP_BASES if run.get(k) and base.get(k))
    per_step = lambda r: r[key] / max(1, r["steps"])  # noqa: E731
    return per_step(run) / per_step(base), name


def read_records(folder: str) -> Dict[str, Dict[int, Dict]]:
    """Every record under ``folder``/records, by arm then seed."""
    out: Dict[str, Dict[int, Dict]] = {}
    records = os.path.join(folder, "records")
    for name in sorted(os.listdir(records)) if os.path.isdir(records) else []:
        with open(os.path.join(records, name)) as fh:
            r = json.load(fh)
        out.setdefault(r["arm"], {})[r["seed"]] = r
    return out


def frontier(recs: Dict[str, Dict[int, Dict]], radii: List[float]) -> Dict:
    """Each frontier arm with seeds paired with standard: its step-time ratio and its
    changes against standard (clean, r1, r2, word), mean ± std over those seeds."""
    get = metric_getters(len(radii))
    base = recs.get("standard", {})
    arms: Dict[str, Dict] = {}
    for arm in FRONTIER_ARMS:
        runs = recs.get(arm, {})
        seeds = sorted(set(runs) & set(base))
        if not seeds:
            continue
        ratios = [step_ratio(runs[s], base[s]) for s in seeds]
        point = {"n": len(seeds), "seeds": seeds,
                 "step_ratio": spread([r for r, _ in ratios]),
                 "step_basis": "+".join(sorted({b for _, b in ratios}))}
        for key, value in get.items():
            point[key] = spread([value(runs[s]) - value(base[s]) for s in seeds
                                 if value(runs[s]) is not None and value(base[s]) is not None])
        arms[arm] = point
    larger = f"r{len(radii)}"
    return {"default": DEFAULT_ARM, "radii": list(radii), "larger": larger, "arms": arms,
            "target": {"max_step_ratio": TARGET_STEP_RATIO,
                       "share_of_default": TARGET_SHARE_OF_DEFAULT,
                       "clean_band": TARGET_CLEAN_BAND},
            "verdicts": target_verdicts(arms, larger)}


def target_verdicts(arms: Dict[str, Dict], larger: str) -> Dict[str, Dict]:
    """For each arm but standard and the default: whether it meets the target and by how
    much it falls short on each condition (0 where it meets it). Empty without the
    default's point (the target is relative to it)."""
    default = arms.get(DEFAULT_ARM)
    if default is None or default[larger]["mean"] is None:
        return {}
    out = {}
    for arm, p in arms.items():
        if arm in ("standard", DEFAULT_ARM) or p[larger]["mean"] is None:
            continue
        ratio = p["step_ratio"]["mean"]
        share = (p[larger]["mean"] / default[larger]["mean"]
                 if default[larger]["mean"] > 0 else None)
        gap = p["clean"]["mean"] - default["clean"]["mean"]
        short = {"step_ratio": max(0.0, ratio - TARGET_STEP_RATIO),
                 "share": (max(0.0, TARGET_SHARE_OF_DEFAULT - share) if share is not None
                           else None),
                 "clean": max(0.0, abs(gap) - TARGET_CLEAN_BAND)}
        out[arm] = {"step_ratio": ratio, "share_of_default": share, "clean_vs_default": gap,
                    "short": short,
                    "meets": share is not None and all(v == 0.0 for v in short.values())}
    return out


def choose_default(frontiers: Dict[str, Dict], rule: DefaultRule = DefaultRule()) -> Dict:
    """The rule: among the ALUM recipes measured on every data set with at least
    ``min_seeds`` seeds, whose mean clean change against standard is at least
    ``clean_floor`` and mean step-time ratio at most ``max_step_ratio`` on every data set,
    the one with the largest *score* = the smallest mean gain over {PGD at each radius,
    DeepWordBug} × {data sets}; recipes within ``tie`` of the best score go to the
    cheapest. Returns the rule, every candidate's row and the pick (None if none is
    eligible)."""
    names = sorted(frontiers)
    candidates = [a for a in FRONTIER_ARMS if a != "standard"
                  and all(a in frontiers[d]["arms"] for d in names)] if names else []
    rows = []
    for arm in candidates:
        points = {d: frontiers[d]["arms"][arm] for d in names}
        gains = [(points[d][k]["mean"], d, k) for d in names for k in GAINS
                 if points[d][k]["mean"] is not None]
        if len(gains) < len(GAINS) * len(names):
            gains.append((None, None, None))  # a metric missing somewhere: unranked
        row = {"arm": arm, "n": min(p["n"] for p in points.values()),
               "clean": min(p["clean"]["mean"] for p in points.values()),
               "step_ratio": max(p["step_ratio"]["mean"] for p in points.values()),
               "score": None, "worst": None, "excluded": None}
        if gains[-1][0] is None:
            row["excluded"] = "a metric is missing on some data set"
        else:
            score, where, key = min(gains)
            row.update(score=score, worst=f"{key} on {where}")
            if row["n"] < rule.min_seeds:
                row["excluded"] = f"fewer than {rule.min_seeds} paired seeds"
            # A tolerance on the floor: accuracies are counts over the evaluation set, so
            # a change of exactly one point (.74 - .75) is -0.010000000000000009 in floats.
            elif row["clean"] < rule.clean_floor - FLOAT_TOLERANCE:
                row["excluded"] = f"clean change below {100 * rule.clean_floor:+.1f} points"
            elif row["step_ratio"] > rule.max_step_ratio:
                row["excluded"] = f"step-time ratio above {rule.max_step_ratio:g}×"
        rows.append(row)
    eligible = [r for r in rows if r["excluded"] is None]
    pick = None
    if eligible:
        best = max(r["score"] for r in eligible)
        tied = [r for r in eligible if r["score"] >= best - rule.tie]
        pick = min(tied, key=lambda r: (r["step_ratio"], -r["score"]))["arm"]
    return {"rule": asdict(rule), "datasets": names, "candidates": rows, "pick": pick}


def budget_picks(frontiers: Dict[str, Dict], rule: DefaultRule = DefaultRule()) -> List[Dict]:
    """Which recipe at which budget: the rule's pick with its cost bound set to each
    eligible recipe's step-time ratio (its worst mean over the data sets), cheapest first,
    one row each time the pick changes: from that budget on, up to the next row's, the
    rule picks that recipe. Eligibility otherwise as the rule (seeds, clean floor), and
    budgets above the rule's own bound are listed too (``within_rule`` says which)."""
    unbounded = choose_default(frontiers, replace(rule, max_step_ratio=math.inf))
    budgets = sorted({r["step_ratio"] for r in unbounded["candidates"]
                      if r["excluded"] is None})
    out: List[Dict] = []
    for budget in budgets:
        choice = choose_default(frontiers, replace(rule, max_step_ratio=budget))
        if out and choice["pick"] == out[-1]["arm"]:
            continue
        row = next(r for r in choice["candidates"] if r["arm"] == choice["pick"])
        out.append({**row, "budget": budget, "within_rule": budget <= rule.max_step_ratio})
    return out


def budget_lines(picks: List[Dict]) -> List[str]:
    """Markdown lines: the rule's pick at each budget (``budget_picks``)."""
    lines = ["Which recipe at which budget (the rule above with its cost bound set to each "
             "budget; step time: the recipe's worst mean over the data sets):", ""]
    if not picks:
        return lines + ["No recipe is eligible at any budget yet."]
    lines += ["| budget (step time × standard) | the rule picks | score (points) | worst at | "
              "clean (worst) |", "|---|---|---|---|---|"]
    for i, p in enumerate(picks):
        upto = f" to {picks[i + 1]['budget']:.2f}×" if i + 1 < len(picks) else " and above"
        note = "" if p["within_rule"] else " (above the rule's bound)"
        lines.append(f"| {p['budget']:.2f}×{upto}{note} | {p['arm']} | "
                     f"{100 * p['score']:+.1f} | {p['worst']} | {100 * p['clean']:+.1f} |")
    return lines + ["", f"Below {picks[0]['budget']:.2f}× no eligible recipe is measured."]


def _cell(s: Dict, scale: float = 100.0, fmt: str = "+.1f") -> str:
    if s["mean"] is None:
        return "–"
    digits = fmt.lstrip("+")
    return f"{scale * s['mean']:{fmt}} ± {scale * s['std']:{digits}}"


def frontier_table(front: Dict, labels: Dict[str, str]) -> List[str]:
    """Markdown lines: one row per arm (step-time ratio; changes against standard, points)
    and, for the variants, the target's verdict."""
    keys = ["clean", *[f"r{i + 1}" for i in range(len(front["radii"]))], "word"]
    lines = ["| arm | seeds | step time × standard (basis) | " + " | ".join(labels[k] for k in keys)
             + " | share of the default's gain at the larger radius | target |",
             "|---|---|---|" + "---|" * len(keys) + "---|---|"]
    for arm, p in front["arms"].items():
        v = front["verdicts"].get(arm)
        if v is None:
            share, verdict = "–", "the default" if arm == DEFAULT_ARM else "–"
        else:
            share = "–" if v["share_of_default"] is None else f"{100 * v['share_of_default']:.0f}%"
            s = v["short"]
            verdict = "**met**" if v["meets"] else "short: " + ", ".join(
                part for part in (
                    s["step_ratio"] and f"{s['step_ratio']:.2f}× too slow",
                    s["share"] and f"{100 * s['share']:.0f}% of the gain",
                    s["share"] is None and "no default gain to share",
                    # Which side: above the band is more accurate than the default.
                    s["clean"] and f"clean {100 * s['clean']:.1f} points "
                    f"{'above' if v['clean_vs_default'] > 0 else 'below'} the band")
                if part)
        lines.append(f"| {arm} | {p['n']} | {_cell(p['step_ratio'], 1.0, '.2f')} "
                     f"({p['step_basis']}) | "
                     + " | ".join(_cell(p[k]) for k in keys) + f" | {share} | {verdict} |")
    return lines


def rule_lines(choice: Dict) -> List[str]:
    """Markdown lines: the rule's candidates and its pick."""
    r = choice["rule"]
    lines = [f"Rule for the default over {', '.join(choice['datasets']) or 'no data set'}: "
             f"score = the smallest mean gain over PGD (each radius) and DeepWordBug on every "
             f"data set; eligible: ≥ {r['min_seeds']} paired seeds, clean change ≥ "
             f"{100 * r['clean_floor']:+.1f} points and step time ≤ {r['max_step_ratio']:g}× "
             f"standard on every data set; within {100 * r['tie']:.1f} points of the best "
             "score, the cheapest.", "",
             "| recipe | seeds (fewest) | score (points) | worst at | clean (worst) | "
             "step time (worst) | eligible |", "|---|---|---|---|---|---|---|"]
    for c in choice["candidates"]:
        score = "–" if c["score"] is None else f"{100 * c['score']:+.1f}"
        lines.append(f"| {c['arm']} | {c['n']} | {score} | {c['worst'] or '–'} | "
                     f"{100 * c['clean']:+.1f} | {c['step_ratio']:.2f}× | "
                     f"{'yes' if c['excluded'] is None else 'no: ' + c['excluded']} |")
    lines += ["", f"The rule picks: **{choice['pick']}**." if choice["pick"] else
              "The rule picks: none (no recipe is eligible yet)."]
    return lines


def other_records(folders: List[str], own: str, own_folder: str) -> Dict[str, Dict]:
    """The records of other data sets' study folders (those with records), by data set
    name; ``own_folder`` (this study's folder) is skipped. A folder of this study's own
    data set ``own``, a folder mixing data sets, or a data set twice is an error."""
    out: Dict[str, Dict] = {}
    for folder in folders:
        if os.path.abspath(folder) == os.path.abspath(own_folder):
            continue
        recs = read_records(folder)
        if not recs:
            continue
        names = {record_dataset(r) for by_seed in recs.values() for r in by_seed.values()}
        if len(names) > 1:
            raise SystemExit(f"robustness_study: {folder}: records of several data sets "
                             f"{sorted(names)}")
        name = names.pop()
        if name == own or name in out:
            raise SystemExit(f"robustness_study: {folder}: its records are of data set "
                             f"{name!r}, already counted; give one folder per other data set")
        out[name] = recs
    return out


def records_frontier(recs: Dict[str, Dict[int, Dict]]) -> Dict:
    """The frontier of one study's records, at the radii they were attacked at."""
    any_rec = next(r for by_seed in recs.values() for r in by_seed.values())
    return frontier(recs, any_rec["radii"])
