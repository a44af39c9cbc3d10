"""The rule for ``alum-pretrain``'s default preset (docs/continual_pretraining_study.md,
"The rule for the pre-training default"), applied to the continual pre-training records.

Each ALUM stage (``CANDIDATES``: stage -> the preset it ran) is followed by standard
fine-tuning (arm ``cpt-X``) and paired by seed with the standard stage followed by
standard fine-tuning (``cpt-standard``), on every data set that holds both:

1. eligible: on every data set the mean clean change is at least ``clean_floor``, and
   neither PGD at the smaller radius nor DeepWordBug is negative beyond one standard
   deviation (mean + std < 0);
2. score: the mean PGD gain at the larger radius, averaged over the data sets;
3. tie: the two best eligible stages tie when their score difference, paired by seed, is
   within one standard deviation of that difference; then the stage whose flip check shows
   δ flipping more masked-token predictions than dropout alone wins (a perturbation that
   flips no more than dropout is R-Drop at ALUM's price); if that does not separate them,
   the higher score;
4. the R-Drop control: whether each stage beats ``cpt-rdrop`` beyond one standard deviation
   at the larger radius, reported beside the pick.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence

from study_datasets import DATASETS
from study_frontier import metric_getters, spread

# ALUM stages that may become the default, and the alum-pretrain preset each one ran.
CANDIDATES = {"relative": "relative", "paper": "paper-pretrain"}
CONTROL = "cpt-standard"
RDROP = "cpt-rdrop"


@dataclass(frozen=True)
class PretrainRule:
    """Thresholds of the rule for the pre-training default."""

    clean_floor: float = -0.01
    """Lowest allowed mean clean-accuracy change against ``cpt-standard`` on any data set
    (a fraction: -0.01 = one point)."""
    min_seeds: int = 3
    """Fewest seeds paired with ``cpt-standard`` on every data set for a stage to be
    ranked."""

    def __post_init__(self):
        if self.min_seeds < 2:
            raise ValueError(f"PretrainRule.min_seeds: at least 2 (a spread needs two "
                             f"seeds), got {self.min_seeds}")


# The record's value of each metric (clean, r1, r2: PGD at each radius, word): the
# frontier's getters; the study attacks at two radii.
_GET = metric_getters(2)


def paired(runs: Dict[int, Dict], base: Dict[int, Dict], key: str) -> List[float]:
    """Per-seed differences ``runs`` − ``base`` of one metric, on the seeds both have."""
    out = []
    for seed in sorted(set(runs) & set(base)):
        a, b = _GET[key](runs[seed]), _GET[key](base[seed])
        if a is not None and b is not None:
            out.append(a - b)
    return out


def _spread(values: List[float]) -> Dict:
    """The frontier's mean ± std, with the count of values."""
    return {**spread(values), "n": len(values)}


def _beyond_one_std(values: List[float]) -> bool:
    """A mean that differs from zero by more than one sample standard deviation."""
    s = _spread(values)
    return len(values) > 1 and abs(s["mean"]) > s["std"]


def choose_pretrain_preset(records: Dict[str, Dict[str, Dict[int, Dict]]],
                           flips: Dict[str, Optional[Dict]], required: Sequence[str],
                           rule: PretrainRule = PretrainRule()) -> Dict:
    """``records``: data set -> arm -> seed -> record; ``flips``: stage -> its flip check
    (``{"alum": rate, "dropout": rate}`` or None); ``required``: the data sets the rule
    counts (every one must hold records). Returns the rule, each candidate's row, the tie
    (if any), the R-Drop comparison and the picked preset (None while no stage is
    eligible)."""
    sets = sorted(d for d, recs in records.items() if recs.get(CONTROL))
    missing = sorted(set(required) - set(sets))
    rows = []
    for stage, preset in CANDIDATES.items():
        arm = f"cpt-{stage}"
        per_set = {d: {k: _spread(paired(records[d].get(arm, {}), records[d][CONTROL], k))
                       for k in ("clean", "r1", "r2", "word")} for d in sets}
        flip = flips.get(stage) or {}
        row = {"stage": stage, "preset": preset, "per_set": per_set, "score": None,
               "excluded": None, "acts": (flip.get("alum") is not None
                                          and flip.get("dropout") is not None
                                          and flip["alum"] > flip["dropout"])}
        n = min((p["r2"]["n"] for p in per_set.values()), default=0)
        row["n"] = n
        row["score"] = (statistics.mean(p["r2"]["mean"] for p in per_set.values())
                        if n else None)
        if missing:
            row["excluded"] = f"no {CONTROL} records on {', '.join(missing)} yet"
        elif not sets or n < rule.min_seeds:
            row["excluded"] = f"fewer than {rule.min_seeds} paired seeds on some data set"
        else:
            for d, p in per_set.items():
                if p["clean"]["mean"] < rule.clean_floor:
                    row["excluded"] = (f"clean change below {100 * rule.clean_floor:+.1f} "
                                       f"points on {d}")
                    break
                bad = [k for k in ("r1", "word") if p[k]["n"] > 1
                       and p[k]["mean"] + p[k]["std"] < 0]
                if bad:
                    row["excluded"] = f"{' and '.join(bad)} negative beyond one std on {d}"
                    break
        rdrop = {d: paired(records[d].get(arm, {}), records[d].get(RDROP, {}), "r2")
                 for d in sets}
        row["vs_rdrop"] = {d: {**_spread(v), "beyond_one_std": _beyond_one_std(v)
                               and statistics.mean(v) > 0} for d, v in rdrop.items() if v}
        rows.append(row)
    eligible = sorted((r for r in rows if r["excluded"] is None),
                      key=lambda r: -r["score"])
    pick, tie = None, None
    if eligible:
        pick = eligible[0]
        if len(eligible) > 1:
            first, second = eligible[0], eligible[1]
            # The score difference paired by seed: the two arms' larger-radius accuracies
            # at the same seed (cpt-standard cancels), pooled over the data sets.
            diffs = [x for d in sets for x in paired(
                records[d][f"cpt-{first['stage']}"], records[d][f"cpt-{second['stage']}"],
                "r2")]
            s = _spread(diffs)
            tie = {"stages": [first["stage"], second["stage"]], "difference": s,
                   "tied": not _beyond_one_std(diffs)}
            if tie["tied"] and second["acts"] and not first["acts"]:
                pick = second
    return {"rule": asdict(rule), "datasets": sets, "missing": missing, "candidates": rows,
            "tie": tie,
            "pick": pick["preset"] if pick else None,
            "pick_stage": pick["stage"] if pick else None}


def rule_over_studies(dataset: str, recs: Dict[str, Dict[int, Dict]],
                      others: Dict[str, Dict[str, Dict[int, Dict]]],
                      stages: Dict[str, Dict]) -> Optional[Dict]:
    """The rule over this study's records (data set ``dataset``) and the other data sets'
    records ``others`` (by data set name, as study_frontier.other_records reads them), with
    the stages' flip checks from ``stages`` (the study state's ``cpt_stages``); None while
    this study has no ``cpt-standard`` record."""
    if not recs.get(CONTROL):
        return None
    flips = {name: entry.get("flip_check") for name, entry in stages.items()}
    return choose_pretrain_preset({dataset: recs, **others}, flips, sorted(DATASETS))


def pretrain_rule_lines(choice: Dict) -> List[str]:
    """Markdown lines: each candidate on each data set, the tie, the R-Drop control and
    the pick."""
    pts = (lambda s: "–" if s["mean"] is None else  # noqa: E731
           f"{100 * s['mean']:+.1f} ± {100 * s['std']:.1f}")
    lines = [f"Rule for the pre-training default over {', '.join(choice['datasets']) or 'no data set'} "
             f"(cpt-X − cpt-standard, paired by seed; eligible: ≥ {choice['rule']['min_seeds']} "
             f"seeds, clean ≥ {100 * choice['rule']['clean_floor']:+.1f} points, PGD r1 and "
             "DeepWordBug not negative beyond one std, on every data set; score: PGD r2 gain "
             "averaged over the data sets; a tie within one std of the paired difference goes "
             "to the stage whose δ flips more than dropout):", "",
             "| stage (preset) | data set | seeds | clean | PGD r1 | PGD r2 | DeepWordBug "
             "| r2 − cpt-rdrop | δ flips more than dropout | score | eligible |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in choice["candidates"]:
        score = "–" if r["score"] is None else f"{100 * r['score']:+.1f}"
        ok = "yes" if r["excluded"] is None else "no: " + r["excluded"]
        for d, p in r["per_set"].items():
            v = r["vs_rdrop"].get(d)
            rd = "–" if v is None else pts(v) + (" (beyond 1 std)" if v["beyond_one_std"] else "")
            lines.append(f"| {r['stage']} ({r['preset']}) | {d} | {p['r2']['n']} | "
                         f"{pts(p['clean'])} | {pts(p['r1'])} | {pts(p['r2'])} | "
                         f"{pts(p['word'])} | {rd} | {'yes' if r['acts'] else 'no'} | "
                         f"{score} | {ok} |")
    t = choice["tie"]
    if t:
        lines += ["", f"{t['stages'][0]} − {t['stages'][1]} at PGD r2, paired by seed: "
                      f"{pts(t['difference'])} ({t['difference']['n']} pairs): "
                      + ("a tie." if t["tied"] else "beyond one std, no tie.")]
    against_rdrop = [v for r in choice["candidates"] for v in r["vs_rdrop"].values()]
    if against_rdrop and not any(v["beyond_one_std"] for v in against_rdrop):
        lines += ["", "No ALUM stage beats the R-Drop stage (δ = 0) beyond one std at the "
                      "larger radius on any data set."]
    lines += ["", f"The rule picks: **{choice['pick']}**." if choice["pick"] else
              "The rule picks: none yet (no stage is eligible on every data set"
              + (f"; no records on {', '.join(choice['missing'])} yet)." if choice["missing"]
                 else ").")]
    return lines
