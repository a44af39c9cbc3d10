"""alum-finetune's resume: checksummed checkpoints, fallback past a damaged one, refusal
when all are damaged (or start-fresh, keeping them), and a NaN/Inf adversarial term
skipped and counted."""
import dataclasses
import json
import math
import os
import zlib

import pytest

from alum.checkpoint_tags import MARKER, incomplete_reason
from alum.finetune.cli import build_parser, run

from .conftest import FIXTURES

pytestmark = pytest.mark.slow  # each test trains a model (a few seconds)

MODEL_FILE = "model.safetensors"


def _args(model_dir, out, *extra):
    return ["--model", model_dir, "--train", os.path.join(FIXTURES, "sst2_train.tsv"),
            "--eval", os.path.join(FIXTURES, "sst2_dev.tsv"), "--output", str(out),
            "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--no-progress",
            "--logging-steps", "2", "--seed", "7", *extra]


def _clean(e):
    return {k: v for k, v in e.items() if "runtime" not in k and "per_second" not in k}


def _zero_middle(path, n=4096):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        before = f.read(n)
        f.seek(size // 2)
        f.write(b"\0" * n)
    assert any(before)


def _digest(root):
    out = {}
    for base, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(base, name), "rb") as f:
                out[os.path.relpath(os.path.join(base, name), root)] = zlib.crc32(f.read())
    return out


def test_damaged_newest_checkpoint_is_passed_over(tiny_bert_dir, tmp_path, caplog):
    out = tmp_path / "run"
    full = run(build_parser().parse_args(_args(tiny_bert_dir, out, "--save-checkpoints")))
    work = tmp_path / "run.work"
    for name in ("checkpoint-4", "checkpoint-8"):
        marker = json.load(open(work / name / MARKER))
        assert MODEL_FILE in marker["checksums"]
        assert incomplete_reason(str(work), name) is None
    _zero_middle(work / "checkpoint-8" / MODEL_FILE)     # same size, other bytes
    import shutil
    shutil.rmtree(out)
    resumed = run(build_parser().parse_args(
        _args(tiny_bert_dir, out, "--save-checkpoints", "--resume")))
    assert "checkpoint-8" in caplog.text and "does not match its checksum" in caplog.text
    assert resumed["steps"] == 8 and resumed["adv_steps"] == 4    # steps 5..8 re-ran
    assert _clean(resumed["final_eval"]) == _clean(full["final_eval"])
    assert "does not match its checksum" in incomplete_reason(str(work / "damaged"),
                                                             "checkpoint-8")


def test_all_damaged_refuses_then_start_fresh_keeps_them(tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "run"
    run(build_parser().parse_args(_args(tiny_bert_dir, out, "--save-checkpoints")))
    work = tmp_path / "run.work"
    os.remove(work / "checkpoint-8" / "optimizer.pt")
    _zero_middle(work / "checkpoint-4" / MODEL_FILE)
    import shutil
    shutil.rmtree(out)
    before = _digest(str(work))
    with pytest.raises(SystemExit) as exit_info:
        run(build_parser().parse_args(
            _args(tiny_bert_dir, out, "--save-checkpoints", "--resume")))
    assert exit_info.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and err[0].startswith(f"alum-finetune: error: {work} holds "
                                               f"checkpoints but none is usable")
    assert "checkpoint-8: optimizer.pt is missing" in err[0]
    assert f"checkpoint-4: {MODEL_FILE} does not match its checksum" in err[0]
    assert _digest(str(work)) == before
    fresh = run(build_parser().parse_args(
        _args(tiny_bert_dir, out, "--save-checkpoints", "--resume",
              "--resume-damaged", "start-fresh")))
    assert fresh["steps"] == 8 and fresh["adv_steps"] == 8          # from step 0
    assert {k: v for k, v in _digest(str(work / "damaged")).items()} == before


@pytest.mark.parametrize("where", ["gradient", "term"])
def test_nan_or_inf_adversarial_term_is_skipped_and_counted(tiny_bert_dir, tmp_path,
                                                            monkeypatch, where):
    import alum.adversarial as adversarial

    calls = []
    if where == "gradient":      # a NaN ascent gradient on every other step
        real = adversarial.ascent_gradient

        def poisoned(*args, **kwargs):
            g, adv = real(*args, **kwargs)
            calls.append(1)
            return (g * float("nan"), adv) if len(calls) % 2 else (g, adv)

        monkeypatch.setattr(adversarial, "ascent_gradient", poisoned)
    else:                        # an Inf final term on every other step
        real_for_loss = adversarial.Divergences.for_loss

        def for_loss(kind):
            d = real_for_loss(kind)

            def final(adv, clean, mask):
                calls.append(1)
                term = d.final(adv, clean, mask)
                return term * float("inf") if len(calls) % 2 else term

            return dataclasses.replace(d, final=final)

        monkeypatch.setattr(adversarial.Divergences, "for_loss", staticmethod(for_loss))
    summary = run(build_parser().parse_args(_args(tiny_bert_dir, tmp_path / "run",
                                                  "--alum-preset", "relative")))
    assert summary["adv_steps"] == 8 and summary["adv_skipped"] == 4
    history = [h["loss"] for h in summary["eval_history"] if "loss" in h] + \
        [e["eval_loss"] for e in summary["eval_history"]]
    assert history and all(math.isfinite(x) for x in history)
