"""Kill test: a pre-training run SIGKILLed at random moments, resumed each time, ends
exactly where an uninterrupted run ends; with a checkpoint file damaged before each
resume, the damage is detected and the run still ends there.

    python benchmarks/fault_injection.py [--kills 10] [--damage-kills 5] [--steps 40]

What it does, all on this machine (no network, one process at a time):

1. an uninterrupted reference run of ``alum-pretrain`` (the main job's tiny BERT,
   dropout 0.1, standard MLM for the first half of the steps and ALUM for the second);
2. the same run SIGKILLed ``--kills`` times and resumed (``--resume auto``) after each
   kill: every other kill lands *inside a checkpoint save* of a random save step, after
   a random number (0-3) of its files are written (the child pauses ``--file-pause``
   seconds after each file and announces it, so the kill lands there however loaded
   the machine is), the others a random moment into a randomly chosen step;
3. the same again (``--damage-kills`` times), but before each resume one random file of the newest complete
   checkpoint is damaged: truncated to half, 64 KiB zeroed in the middle (size
   unchanged), or deleted. The resume must name the damaged checkpoint and fall back
   to the previous one; when no usable checkpoint is left it must refuse, and the
   script then passes ``--resume-damaged start-fresh`` (which moves the damaged
   checkpoints to ``checkpoints/damaged/``).

Each child process records, for every optimizer step it runs, the MLM loss and the ALUM
statistics as exact floats (``float.hex``); a step re-run after a resume replaces the
earlier record. "identical" means bitwise equal to the reference: per kill, the steps
that invocation ran; at the end, every step's loss and ALUM statistics and every tensor
of the final weights. The script prints one table per phase and exits 1 if anything
differs or a damaged checkpoint went unnoticed.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

HERE = os.path.abspath(__file__)
EVENT = "@@fault_injection "


# -- the child: alum-pretrain with every step's exact numbers recorded -----------------
def child_main(record_path: str, argv: List[str]) -> int:
    """Runs ``alum-pretrain argv`` in this process, recording each step to
    ``record_path`` and announcing steps, saves (and each file a save writes) and the
    resume point on stdout. ``FAULT_INJECTION_FILE_PAUSE`` seconds of pause after each
    checkpoint file give the parent a window to kill the process *inside* a save, with
    some of its files written, whatever the machine's load; it changes no number."""
    import torch

    from alum.pretrain import cli
    from alum.pretrain.checkpoint import CheckpointManager
    from alum.pretrain.mlm_step import ADV_KEYS
    from alum.pretrain.trainer import Trainer

    record = open(record_path, "a")

    def say(text: str) -> None:
        print(EVENT + text, flush=True)

    from alum.pretrain.mlm_step import MicroBatchSteps
    from alum.pretrain.pipeline_loop import PipelineSteps

    real_init, real_save = Trainer.__init__, CheckpointManager.save
    position = {"step": 0}    # the loop's step: set at resume, advanced by each step

    def wrap_step(real_step):
        def optimizer_step(self, batches, alum_on=False):
            stats = real_step(self, batches, alum_on)
            position["step"] += 1
            entry = {"step": position["step"], "loss": float(stats["loss"]).hex(),
                     "adv": {k: float(stats[k]).hex() for k in ADV_KEYS
                             if stats.get(k) is not None}}
            record.write(json.dumps(entry) + "\n")
            record.flush()
            say(f"step {position['step']}")
            return stats
        return optimizer_step

    def init(self, cfg):
        real_init(self, cfg)  # builds the run, resumed where its checkpoints say
        position["step"] = self.step
        say(f"resumed {self.step}")

    pause = float(os.environ.get("FAULT_INJECTION_FILE_PAUSE", "0"))
    real_torch_save = torch.save

    def save(self, engine, step, client_state):
        say(f"save_begin {step}")

        def announced_save(obj, f, *args, **kwargs):
            real_torch_save(obj, f, *args, **kwargs)
            say(f"file_written {step}")
            time.sleep(pause)

        torch.save = announced_save
        try:
            tag = real_save(self, engine, step, client_state)
        finally:
            torch.save = real_torch_save
        say(f"save_end {step}")
        return tag

    for steps_class in (MicroBatchSteps, PipelineSteps):
        steps_class.optimizer_step = wrap_step(steps_class.optimizer_step)
    Trainer.__init__, CheckpointManager.save = init, save
    return cli.main(argv)


# -- the parent ---------------------------------------------------------------------
def run_args(output_dir: str, args: argparse.Namespace) -> List[str]:
    return ["--output-dir", output_dir, "--train-steps", str(args.steps),
            "--micro-batch-size", str(args.micro_batch_size),
            "--save-interval", str(args.save_interval), "--keep-last", "2",
            "--adv-start-step", str(args.steps // 2), "--eval-interval", "0",
            "--log-interval", "1000", "--progress-bar", "false", "--tensorboard", "false"]


class Child:
    """One child process; its events read on a thread, with the time each arrived."""

    def __init__(self, record: str, argv: List[str], log_path: str, file_pause: float = 0.0):
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
                   PYTHONUNBUFFERED="1", FAULT_INJECTION_FILE_PAUSE=str(file_pause))
        self.log = open(log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, HERE, "--child", record, "--", *argv],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
            start_new_session=True)
        self.events: "queue.Queue[Tuple[float, str, int]]" = queue.Queue()
        self.seen: List[Tuple[float, str, int]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(EVENT):
                kind, value = line[len(EVENT):].split()
                self.events.put((time.time(), kind, int(value)))
        self.events.put((time.time(), "exit", 0))

    def next_event(self) -> Tuple[float, str, int]:
        event = self.events.get()
        self.seen.append(event)
        return event

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)

    def finish(self) -> int:
        rc = self.proc.wait()
        while True:   # the events still in the pipe
            try:
                event = self.events.get(timeout=5)
            except queue.Empty:
                break
            self.seen.append(event)
            if event[1] == "exit":
                break
        self.log.close()
        return rc


def read_records(path: str) -> Tuple[Dict[int, dict], List[dict]]:
    """(the last record of each step, every record in order)."""
    entries = []
    with open(path) as f:
        for line in f:
            if line.endswith("\n"):     # a line cut by the kill is not a record
                entries.append(json.loads(line))
    return {e["step"]: e for e in entries}, entries


def final_weights(run_dir: str):
    import torch

    ckpt = os.path.join(run_dir, "checkpoints")
    tag = open(os.path.join(ckpt, "latest")).read().strip()
    state = torch.load(os.path.join(ckpt, tag, "mp_rank_00_model_states.pt"),
                       map_location="cpu", weights_only=False)
    return tag, state["module"]


def weights_identical(a, b) -> bool:
    import torch

    return set(a) == set(b) and all(
        (a[k] is None and b[k] is None) or
        (torch.is_tensor(a[k]) and torch.is_tensor(b[k]) and a[k].dtype == b[k].dtype
         and torch.equal(a[k], b[k])) or
        (not torch.is_tensor(a[k]) and a[k] == b[k]) for k in a)


def damage(run_dir: str, rng: random.Random) -> Optional[Tuple[str, str, str]]:
    """Damage one random file of the newest complete checkpoint: (tag, file, how)."""
    from alum.checkpoint_tags import complete_tags

    ckpt = os.path.join(run_dir, "checkpoints")
    complete = complete_tags(ckpt, verify=True)
    if not complete:
        return None
    tag = complete[-1][1]
    tag_dir = os.path.join(ckpt, tag)
    files = sorted(os.path.relpath(os.path.join(r, n), tag_dir)
                   for r, _, ns in os.walk(tag_dir) for n in ns)
    name = rng.choice(files)
    path = os.path.join(tag_dir, name)
    how = rng.choice(["truncated", "zeroed", "deleted"])
    size = os.path.getsize(path)
    if how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    elif how == "zeroed":
        with open(path, "r+b") as f:
            data = f.read()
        n = min(65536, max(1, size // 2))
        start = (size - n) // 2
        while start > 0 and not any(data[start:start + n]):   # zeros over zeros: no damage
            start = max(0, start - n)
        with open(path, "r+b") as f:
            f.seek(start)
            f.write(b"\0" * n)
        how = f"zeroed {n} B"
    else:
        os.remove(path)
    return tag, name, how


def identical_steps(entries: List[dict], reference: Dict[int, dict]) -> bool:
    return all(reference.get(e["step"]) == e for e in entries)


def kill_phase(args, rng: random.Random, work: str, name: str, reference: Dict[int, dict],
               timing: Dict[str, float], with_damage: bool) -> Tuple[List[dict], bool]:
    """Runs, kills and resumes until the run ends; returns the table rows and whether the
    final state equals the reference."""
    run_dir = os.path.join(work, name)
    record = os.path.join(work, f"{name}.jsonl")
    log_path = os.path.join(work, f"{name}.log")
    steps = args.steps
    # Kill targets spread over the run: even kills during a save, odd ones in a step.
    kills = args.damage_kills if with_damage else args.kills
    # Even kills: inside a save (a save step, a random number of its files written);
    # odd kills: a random moment in a random step. In order of the step they aim at.
    # With damage, kills come after the first checkpoint, so there is one to damage.
    save_steps = list(range(args.save_interval, steps + 1, args.save_interval))
    first = args.save_interval + 1 if with_damage else 1
    plan = [("save", rng.choice(save_steps[1:] if with_damage else save_steps),
             rng.randint(0, 3)) if i % 2 == 0 else
            ("step", rng.randint(first, steps - 2), 0) for i in range(kills)]
    plan.sort(key=lambda p: (p[1], p[0] == "save"))
    rows: List[dict] = []
    kill_no = 0
    pending_damage = None
    extra: List[str] = []
    while True:
        before = len(read_records(record)[1]) if os.path.exists(record) else 0
        log_start = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        child = Child(record, run_args(run_dir, args) + extra, log_path, args.file_pause)
        extra = []
        resumed_from = None
        killed = None
        written = 0
        while True:
            _, kind, value = child.next_event()
            if kind == "resumed":
                resumed_from = value
            if kind == "exit":
                break
            if kill_no >= len(plan):
                continue
            mode, target, files = plan[kill_no]
            if kind == "save_begin":
                written = 0
            if kind == "file_written":
                written += 1
            if mode == "save" and value >= target and (
                    (kind == "save_begin" and files == 0) or
                    (kind == "file_written" and written >= files)):
                time.sleep(rng.uniform(0, args.file_pause))   # inside the pause
                killed = value
            elif mode == "step" and kind == "step" and value >= target:
                time.sleep(rng.uniform(0, timing["step"]))
                killed = value
            if killed is not None:
                child.kill()
                break
        rc = child.finish()
        with open(log_path) as f:
            f.seek(log_start)
            log_text = f.read()
        refused = "none is usable" in log_text
        _, entries = read_records(record)
        ran = entries[before:]
        if rows:   # the row of the previous kill learns where it resumed and whether found
            row = rows[-1]
            row["resumed from"] = "refused" if refused else resumed_from
            if pending_damage is not None:
                tag = pending_damage[0]
                row["detected"] = "yes" if (f"'{tag}'" in log_text and "not usable" in log_text) \
                    or (refused and tag in log_text) else "NO"
            row["identical"] = "yes" if identical_steps(ran, reference) else "NO"
        if refused:
            # every checkpoint damaged: the run refused; start fresh, as the user would
            extra = ["--resume-damaged", "start-fresh"]
            rows.append({"kill": "-", "moment": "refused: every checkpoint damaged",
                         "damaged file": "-", "detected": "-"})
            pending_damage = None
            continue
        if killed is None:
            if rc != 0:
                raise RuntimeError(f"the run failed (exit {rc}); see {log_path}")
            break
        kill_no += 1
        last = [(k, v) for _, k, v in child.seen
                if k in ("step", "save_begin", "save_end", "file_written")]
        kind, value = last[-1] if last else ("start", 0)
        if kind in ("save_begin", "file_written"):
            n = 0
            for k, _ in reversed(last):
                if k == "save_begin":
                    break
                n += k == "file_written"
            moment = f"during the save of step {value} ({n} files written)"
        else:
            moment = {"save_end": f"just after the save of step {value}",
                      "step": f"after step {value}"}.get(kind, "at start-up")
        row = {"kill": kill_no, "moment": moment, "damaged file": "-", "detected": "-"}
        pending_damage = damage(run_dir, rng) if with_damage else None
        if pending_damage is not None:
            tag, fname, how = pending_damage
            row["damaged file"] = f"{tag}/{fname} ({how})"
        rows.append(row)
    final_ref = final_weights(os.path.join(work, "reference"))
    final_run = final_weights(run_dir)
    curve, _ = read_records(record)
    same_curve = curve == reference
    same_weights = final_ref[0] == final_run[0] and weights_identical(final_ref[1], final_run[1])
    rows.append({"kill": "end", "moment": f"step {max(curve)} of {steps}",
                 "damaged file": "-", "detected": "-", "resumed from": "-",
                 "identical": f"losses+ALUM {'yes' if same_curve else 'NO'}, "
                              f"weights {'yes' if same_weights else 'NO'}"})
    return rows, same_curve and same_weights


def print_table(title: str, rows: List[dict]) -> None:
    cols = ["kill", "moment", "damaged file", "detected", "resumed from", "identical"]
    widths = {c: max(len(c), *(len(str(r.get(c, "-"))) for r in rows)) for c in cols}
    print(f"\n{title}")
    print("  ".join(c.ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "-")).ljust(widths[c]) for c in cols))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=10,
                   help="kills of the kill-only phase (default 10)")
    p.add_argument("--damage-kills", type=int, default=5,
                   help="kills of the phase that damages a checkpoint file before each "
                        "resume (default 5)")
    p.add_argument("--steps", type=int, default=40, help="optimizer steps (default 40)")
    p.add_argument("--save-interval", type=int, default=5, help="default 5")
    p.add_argument("--micro-batch-size", type=int, default=8, help="default 8")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments and damage")
    p.add_argument("--file-pause", type=float, default=0.3,
                   help="seconds the child pauses after each checkpoint file it writes, so "
                        "that kills land inside saves on a loaded machine (default 0.3)")
    p.add_argument("--phases", default="kill,damage",
                   help="kill (kills only), damage (kills and damage) or both (default)")
    p.add_argument("--work-dir", default=None,
                   help="where the runs go (default: a temporary directory, removed)")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    work = args.work_dir or tempfile.mkdtemp(prefix="alum_fault_injection_")
    os.makedirs(work, exist_ok=True)
    started = time.time()
    try:
        ref_record = os.path.join(work, "reference.jsonl")
        child = Child(ref_record, run_args(os.path.join(work, "reference"), args),
                      os.path.join(work, "reference.log"))
        while child.next_event()[1] != "exit":
            pass
        if child.finish() != 0:
            raise RuntimeError(f"the reference run failed; see {work}/reference.log")
        reference, _ = read_records(ref_record)
        times = {k: [t for t, kind, _ in child.seen if kind == k]
                 for k in ("step", "save_begin", "save_end")}
        step_times = [b - a for a, b in zip(times["step"], times["step"][1:])]
        saves = [e - b for b, e in zip(times["save_begin"], times["save_end"])]
        timing = {"step": sorted(step_times)[len(step_times) // 2],
                  "save": max(saves) if saves else 0.1}
        print(f"reference: {len(reference)} steps, ALUM from step {args.steps // 2}, "
              f"checkpoint every {args.save_interval}; median step {timing['step']:.3f} s, "
              f"longest save {timing['save']:.3f} s")
        ok = True
        for phase in args.phases.split(","):
            rows, same = kill_phase(args, rng, work, phase, reference, timing,
                                    with_damage=phase == "damage")
            title = ("SIGKILL and resume" if phase == "kill" else
                     "SIGKILL, one checkpoint file damaged, resume")
            print_table(title, rows)
            kills = [r for r in rows if isinstance(r["kill"], int)]
            in_saves = sum("during the save" in r["moment"] for r in kills)
            damaged = [r for r in kills if r["damaged file"] != "-"]
            detected = sum(r.get("detected") == "yes" for r in damaged)
            print(f"kills {len(kills)} ({in_saves} during saves), damaged files "
                  f"{len(damaged)}, detected {detected}; final state identical to the "
                  f"uninterrupted run: {'yes' if same else 'NO'}")
            ok = ok and same and detected == len(damaged) and all(
                r.get("identical") in ("yes", None) for r in kills)
        print(f"\ntotal {time.time() - started:.0f} s; {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sep = sys.argv.index("--")
        sys.exit(child_main(sys.argv[2], sys.argv[sep + 1:]))
    sys.exit(main())
