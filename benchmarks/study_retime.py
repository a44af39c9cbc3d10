"""CPU times for the robustness study's records written before they were kept.

The frontier's step-time ratio (study_frontier.step_ratio) divides an arm's training CPU
seconds per step by standard's at the same seed. The study's first records hold only the
training's wall time, measured while other jobs shared the machine (a standard run took
270 to 800 s for the same 250 steps), so a variant paired with one of them would fall back
to a wall-time ratio that measures the machine's load more than the step.

``robustness_study.py --retime`` re-runs the fine-tuning of such a record, the same
command the record's run had (arm, seed, data, settings), on the machine the new records
run on, and adds its CPU times to the record. No attack runs again: the record's
accuracies stay the ones it had. The re-run must be the record's computation: it
scores the retrained model on the same held-out examples (``alum-finetune --extra-eval``,
after the timed training) and refuses, naming both numbers, when its clean accuracy
differs from the record's by more than ``CLEAN_TOLERANCE``; the record keeps both.

``--retime-all`` re-times records that have CPU times too: a record whose run shared the
CPUs with other work has its CPU time inflated as well (cache and memory contention), and
standard's record is the denominator of every ratio at its seed. Re-timing a set's records
back to back on a quiet machine gives them one footing; the replaced times stay in the
record (``retimed["replaced"]``).
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Callable, Dict, List

# Accuracy difference (fraction) between the record's clean score (alum-robustness) and the
# re-run's (the Trainer's evaluation): the same weights give the same predictions up to
# float noise between the two evaluations' batchings, a prediction or two of 1,000.
CLEAN_TOLERANCE = 0.003
HELDOUT = "heldout"


def needs_retime(record: Dict) -> bool:
    """A record without the training's CPU time (written before it was kept)."""
    return not record.get("train_cpu_seconds")


# The times a re-run replaces (``--retime-all``), kept in ``retimed["replaced"]``.
TIMES = ("train_cpu_seconds", "command_cpu_seconds", "retimed")


def retime_record(study, arm: str, seed: int, model_of: Callable[[str], str],
                  again: bool = False) -> bool:
    """Re-run ``arm``'s fine-tuning at ``seed`` from ``model_of(arm)`` (asked only when a
    run is needed: a stage's model may be built or hashed) and add its CPU times to the
    record; False when the record has them already, unless ``again``."""
    path = study.record_path(arm, seed)
    with open(path) as fh:
        record = json.load(fh)
    if not (again or needs_retime(record)):
        return False
    replaced = {k: record[k] for k in TIMES if record.get(k) is not None}
    out = os.path.join(study.out, "models", f"{arm}-seed{seed}-retime")
    name = f"retime {arm} seed {seed}"
    cmd = study.finetune_command(arm, seed, model_of(arm), out) + [
        "--extra-eval", f"{HELDOUT}={study.eval_csv}"]
    study.timed(name, lambda: study.sh(cmd, f"retime-{arm}-{seed}.log"))
    with open(os.path.join(out, "alum_finetune.json")) as fh:
        ft = json.load(fh)
    clean = ft["extra_evals"][HELDOUT][f"eval_{HELDOUT}_accuracy"]
    if ft["steps"] != record["steps"] or abs(clean - record["clean"]) > CLEAN_TOLERANCE:
        raise SystemExit(
            f"robustness_study: {path}: the re-run is not the record's run ({ft['steps']} "
            f"steps, clean {clean:.4f}, against {record['steps']} steps, clean "
            f"{record['clean']:.4f}); its times are not added (log: "
            f"{os.path.join(study.out, 'logs', f'retime-{arm}-{seed}.log')})")
    record["train_cpu_seconds"] = ft["train_cpu_seconds"]
    record["command_cpu_seconds"] = study.state["cpu_s"][name]
    record["retimed"] = {"date": datetime.date.today().isoformat(),
                         "train_seconds": ft["train_seconds"],
                         "clean_record": record["clean"], "clean_rerun": clean}
    if replaced:
        record["retimed"]["replaced"] = replaced
    from alum.atomic_write import atomic_write_text

    atomic_write_text(path, json.dumps(record, indent=1))
    return True


def retime_records(study, arms: List[str], seeds: List[int],
                   model_of: Callable[[str], str], again: bool = False) -> List[str]:
    """``retime_record`` for every existing record of ``arms`` × ``seeds`` (seeds outer,
    as the study runs); ``model_of(arm)`` is the model its run started from; ``again``:
    also the records that have CPU times. The names of the records retimed."""
    done = []
    for seed in seeds:
        for arm in arms:
            if (os.path.exists(study.record_path(arm, seed))
                    and retime_record(study, arm, seed, model_of, again)):
                done.append(f"{arm}-seed{seed}")
    return done


def retime_study(study, arm_stage: Dict[str, str], arms: List[str]) -> None:
    """``--retime`` (``--retime-all``: ``again``): ``retime_records`` over the study's
    ``--arms`` × ``--seeds`` (an arm of ``arm_stage`` started from its continual
    pre-training stage's model, the others from MiniLM), then its report."""
    study.seeds = [int(s) for s in study.args.seeds.split(",")]
    study.split()
    done = retime_records(study, arms, study.seeds, lambda arm: study.cpt.model(
        arm_stage[arm]) if arm in arm_stage else study.minilm, study.args.retime_all)
    print(f"retimed: {', '.join(done) or 'none needed'}", flush=True)
    study.report(arms, study.state["radii"], final=True)
