"""Monitoring through DeepSpeed's monitor: one short run with TensorBoard (the default), the
CSV monitor and Weights & Biases (offline) on; each writer's record is read back and
compared with the run's own per-step losses and with the other writers."""
import csv
import glob
import json
import math
import os
import struct

import pytest

from alum import AlumConfig
from alum.plotting import read_png_data
from alum.pretrain import Trainer
from alum.pretrain.config import LoggingConfig
from alum.pretrain.metrics_log import add_monitor_sections

from .conftest import tiny_config

pytest.importorskip("tensorboard")

STEPS, LOG_EVERY, ALUM_FROM = 6, 2, 2
MICRO = 4
ALUM_STATS = ("adv_loss", "delta_rel_norm", "cos_delta_grad", "grad_share", "flip_rate",
              "adv_skipped")
EXPECTED = {f"train/{k}" for k in ("loss", "accuracy", "lr", "grad_norm", "tokens_per_s",
                                    "tflops", "mfu", "alum", "memory_gib", "peak_memory_gib",
                                    *ALUM_STATS)} | {"valid/loss", "valid/accuracy"}


def wandb_history(path):
    """The history rows of an offline W&B run file: its records are framed as in LevelDB's
    log format (32 KiB blocks; 7-byte headers: CRC, length, type) after a 7-byte W&B
    header, each one a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B"
    pos, block, buf, rows = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                             for i in record.history.item})
    return rows


@pytest.fixture(scope="module")
def monitored_run(tmp_path_factory, sample_cache):
    pytest.importorskip("wandb")
    out = tmp_path_factory.mktemp("monitored")
    cfg = tiny_config(out / "run", sample_cache, steps=STEPS, micro=MICRO,
                      alum=AlumConfig.from_preset("relative", start_step=ALUM_FROM))
    cfg.train.log_interval = LOG_EVERY
    cfg.logging = LoggingConfig(progress_bar=False, csv=True, wandb=True,
                                wandb_project="alum-test", peak_tflops=1.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_DIR", "")  # recorded, so restored after the run
        del os.environ["WANDB_DIR"]  # unset: the run directory is the default
        summary = Trainer(cfg).train()
    return str(out / "run"), summary


def tb_scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(run_dir, "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_tensorboard_events_hold_every_scalar_at_every_log_step(monitored_run):
    run_dir, summary = monitored_run
    scalars = tb_scalars(run_dir)
    assert EXPECTED <= set(scalars), EXPECTED - set(scalars)
    log_steps = list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    # The x axis is samples trained on (the global batch, MICRO, per step).
    assert scalars["train/step"] == {MICRO * s: float(s) for s in log_steps}
    scalars = {tag: {int(x) // MICRO: v for x, v in values.items()}
               for tag, values in scalars.items() if tag.startswith(("train/", "valid/"))}
    for step in log_steps:  # the window's mean of the per-step losses the run returned
        window = summary.losses[step - LOG_EVERY:step]
        assert scalars["train/loss"][step] == pytest.approx(sum(window) / len(window),
                                                            rel=1e-6)
        assert scalars["train/alum"][step] == (1.0 if step > ALUM_FROM else 0.0)
        assert scalars["train/memory_gib"][step] > 0
        assert scalars["train/peak_memory_gib"][step] >= scalars["train/memory_gib"][step]
        assert scalars["train/mfu"][step] == pytest.approx(scalars["train/tflops"][step])
    # ALUM statistics exist only for the steps with ALUM on.
    assert sorted(scalars["train/delta_rel_norm"]) == [s for s in log_steps if s > ALUM_FROM]
    assert scalars["valid/loss"][STEPS] == pytest.approx(summary.evals[-1]["loss"], rel=1e-6)
    assert 0 < scalars["train/lr"][STEPS] < 2e-3
    # DeepSpeed's own learning-rate event comes through the same monitor.
    assert "Train/Samples/lr" in tb_scalars(run_dir)


def test_csv_and_wandb_get_the_same_scalars(monitored_run):
    run_dir, _ = monitored_run
    scalars = tb_scalars(run_dir)
    for tag in EXPECTED:
        path = os.path.join(run_dir, "csv", tag.replace("/", "_") + ".csv")
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows[0][0] == "step"
        from_csv = {int(r[0]): float(r[1]) for r in rows[1:]}
        assert from_csv.keys() == scalars[tag].keys(), tag
        for step, value in from_csv.items():
            assert value == pytest.approx(scalars[tag][step], rel=1e-6), (tag, step)
    files = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))
    assert len(files) == 1, "W&B's offline run belongs in the run directory"
    from_wandb = {}
    for row in wandb_history(files[0]):
        for key, value in row.items():
            if not key.startswith("_"):
                from_wandb.setdefault(key, {})[row["_step"]] = value
    for tag in EXPECTED:
        assert from_wandb[tag].keys() == scalars[tag].keys(), tag
        for step, value in from_wandb[tag].items():
            assert value == pytest.approx(scalars[tag][step], rel=1e-6), (tag, step)


def test_alum_plot_draws_the_logged_curves(monitored_run, tmp_path):
    from alum.pretrain.plot import PANELS, main

    run_dir, summary = monitored_run
    png = tmp_path / "curves.png"
    assert main([run_dir, "--output", str(png)]) == 0
    data = read_png_data(str(png))
    scalars = tb_scalars(run_dir)
    assert list(data["panels"]) == [title for title, _, _ in PANELS]
    assert data["panels"]["MLM loss"] == ["train/loss", "valid/loss"]
    assert data["panels"]["δ/‖e‖ (perturbation size)"] == ["train/delta_rel_norm"]
    for name, pairs in data["series"].items():  # drawn against optimizer steps
        assert {MICRO * s: v for s, v in pairs} == pytest.approx(scalars[name], rel=1e-6)
    assert data["alum_spans"] == [[LOG_EVERY, STEPS]]
    # The same figure from the CSV files alone.
    csv_only = tmp_path / "csv_run"
    os.makedirs(csv_only)
    os.symlink(os.path.join(run_dir, "csv"), csv_only / "csv")
    assert main([str(csv_only)]) == 0
    again = read_png_data(str(csv_only / "curves.png"))
    # TensorBoard keeps float32, the CSV file the full value.
    assert [s for s, _ in again["series"]["train/loss"]] == [s for s, _ in data["series"]["train/loss"]]
    assert [v for _, v in again["series"]["train/loss"]] == pytest.approx(
        [v for _, v in data["series"]["train/loss"]], rel=1e-6)


def test_alum_plot_refuses_a_folder_without_a_log(tmp_path, capsys):
    from alum.pretrain.plot import main

    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "train/loss" in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "curves.png")


def test_monitor_sections_keep_what_the_deepspeed_json_says(tmp_path):
    cfg = LoggingConfig(csv=True)
    ds = add_monitor_sections({"tensorboard": {"enabled": True, "job_name": "tb"},
                               "csv_monitor": {"enabled": False}}, cfg, str(tmp_path))
    assert ds["tensorboard"] == {"enabled": True, "job_name": "tb",
                                 "output_path": str(tmp_path)}
    assert ds["csv_monitor"]["enabled"] is False  # the JSON's choice wins over --csv
    assert ds["wandb"]["enabled"] is False
    off = add_monitor_sections({}, LoggingConfig(tensorboard=False), str(tmp_path))
    assert not any(off[k]["enabled"] for k in ("tensorboard", "wandb", "csv_monitor"))


def test_a_missing_writer_library_names_the_field(tmp_path, monkeypatch):
    import alum.pretrain.metrics_log as metrics_log

    monkeypatch.setattr(metrics_log, "_installed", lambda module: module != "wandb")
    with pytest.raises(ValueError, match=r"LoggingConfig\.wandb: the wandb package"):
        add_monitor_sections({}, LoggingConfig(wandb=True), str(tmp_path))


def test_finite_values_only(monitored_run):
    scalars = tb_scalars(monitored_run[0])
    assert all(math.isfinite(v) for tag in EXPECTED for v in scalars[tag].values())
