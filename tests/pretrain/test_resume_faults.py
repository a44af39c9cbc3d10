"""Resume over damaged checkpoints: a checksum catches bytes changed in place, a run
refuses to restart over checkpoints that are all damaged (and, told to start fresh,
keeps them), a checkpoint of another shape is one line, a full disk during a save is
one line and leaves the previous checkpoint usable."""
import errno
import io
import json
import logging
import os
import zlib

import pytest
import torch

from alum.checkpoint_tags import DAMAGED, LATEST, MARKER, all_tags, incomplete_reason
from alum.output_errors import OutputError
from alum.pretrain import Trainer
from alum.pretrain.checkpoint import (CheckpointMismatchError, DamagedCheckpointsError,
                                      resumable_tag)

from .conftest import tiny_config

MODEL = "mp_rank_00_model_states.pt"
OPTIM = "zero_pp_rank_0_mp_rank_00_optim_states.pt"


def ckpt_dir(out):
    return os.path.join(str(out), "checkpoints")


def zero_middle(path, n=65536):
    """Overwrite ``n`` bytes in the middle of ``path`` with zeros (size unchanged)."""
    size = os.path.getsize(path)
    n = min(n, size // 2)
    with open(path, "r+b") as f:
        f.seek((size - n) // 2)
        before = f.read(n)
        f.seek((size - n) // 2)
        f.write(b"\0" * n)
    assert any(before), "the zeroed range held only zeros: nothing was changed"


def tree_digest(root):
    """{relative path: CRC-32} of every file under ``root`` (an independent check)."""
    out = {}
    for base, _, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = zlib.crc32(f.read())
    return out


def test_bytes_zeroed_in_the_model_file_fall_back_and_resume_exactly(tmp_path, sample_cache,
                                                                     caplog):
    kw = dict(steps=6, dropout=0.1, save_interval=2, keep_last=2)
    straight = Trainer(tiny_config(tmp_path / "straight", sample_cache, **kw)).train()
    out = tmp_path / "run"
    Trainer(tiny_config(out, sample_cache, max_steps=4, **kw)).train()
    victim = os.path.join(ckpt_dir(out), "global_step4", MODEL)
    size = os.path.getsize(victim)
    zero_middle(victim)
    assert os.path.getsize(victim) == size
    with caplog.at_level(logging.WARNING, logger="alum.pretrain"):
        resumed = Trainer(tiny_config(out, sample_cache, resume="auto", **kw)).train()
    assert "global_step4" in caplog.text and "does not match its checksum" in caplog.text
    assert "resuming from the previous complete checkpoint 'global_step2'" in caplog.text
    assert resumed.start_step == 2 and resumed.end_step == 6
    assert resumed.losses == straight.losses[2:]          # bit for bit
    # Reaching step 4 again did not overwrite the damaged tag: it was set aside, intact.
    kept = os.path.join(ckpt_dir(out), DAMAGED, "global_step4", MODEL)
    assert os.path.getsize(kept) == size
    assert "does not match its checksum" in incomplete_reason(
        os.path.join(ckpt_dir(out), DAMAGED), "global_step4")


def test_every_checkpoint_damaged_refuses_and_changes_nothing(tmp_path, sample_cache):
    out = tmp_path / "run"
    kw = dict(steps=4, save_interval=2, keep_last=2)
    Trainer(tiny_config(out, sample_cache, **kw)).train()
    d = ckpt_dir(out)
    with open(os.path.join(d, "global_step4", OPTIM), "r+b") as f:
        f.truncate(1000)
    zero_middle(os.path.join(d, "global_step2", MODEL))
    before = tree_digest(str(out))
    with pytest.raises(DamagedCheckpointsError) as err:
        Trainer(tiny_config(out, sample_cache, resume="auto", steps=8, save_interval=2))
    message = str(err.value)
    assert "\n" not in message
    assert f"global_step4: {OPTIM} has 1000 bytes" in message
    assert f"global_step2: {MODEL} does not match its checksum" in message
    assert "--resume-damaged start-fresh" in message
    assert tree_digest(str(out)) == before     # nothing written, moved or deleted


def test_start_fresh_keeps_the_damaged_checkpoints(tmp_path, sample_cache):
    out = tmp_path / "run"
    kw = dict(steps=4, save_interval=2, keep_last=2)
    Trainer(tiny_config(out, sample_cache, **kw)).train()
    d = ckpt_dir(out)
    os.remove(os.path.join(d, "global_step4", MODEL))
    zero_middle(os.path.join(d, "global_step2", OPTIM))
    damaged_before = {k: v for k, v in tree_digest(d).items() if k.startswith("global_step")}
    cfg = tiny_config(out, sample_cache, resume="auto", **kw)
    cfg.checkpoint.resume_damaged = "start-fresh"
    summary = Trainer(cfg).train()
    assert summary.start_step == 0 and summary.end_step == 4
    assert [t for _, t in all_tags(d)] == ["global_step2", "global_step4"]
    assert incomplete_reason(d, "global_step4") is None
    kept = tree_digest(os.path.join(d, DAMAGED))
    assert {k: v for k, v in kept.items() if k != LATEST} == damaged_before


def test_a_checkpoint_of_another_shape_is_refused_in_one_line(tmp_path, sample_cache):
    out = tmp_path / "run"
    Trainer(tiny_config(out, sample_cache, steps=2, hidden=32)).train()
    with pytest.raises(CheckpointMismatchError) as err:
        Trainer(tiny_config(out, sample_cache, steps=4, hidden=64, resume="auto"))
    assert "\n" not in str(err.value)
    assert "global_step2 was written by another model shape or parallel layout" in str(err.value)
    assert "hidden_size 32 there, 64 here" in str(err.value)
    # What does not shape the tensors (dropout) is no mismatch.
    assert Trainer(tiny_config(out, sample_cache, steps=4, hidden=32, dropout=0.1,
                               resume="auto")).step == 2
    # A marker without the writer's identity (older runs): DeepSpeed's size mismatch,
    # still one line naming the checkpoint.
    marker_path = os.path.join(ckpt_dir(out), "global_step2", MARKER)
    marker = json.load(open(marker_path))
    del marker["identity"]
    json.dump(marker, open(marker_path, "w"))
    with pytest.raises(CheckpointMismatchError) as err:
        Trainer(tiny_config(out, sample_cache, steps=4, hidden=64, resume="auto"))
    assert "\n" not in str(err.value) and "does not fit this model" in str(err.value)
    assert "size mismatch" in str(err.value)


class _FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does (ENOSPC)."""

    def __init__(self, path, room):
        self.f = open(path, "wb")
        self.room = room

    def writable(self):
        return True

    def write(self, b):
        if len(b) > self.room:
            self.f.write(bytes(b[:self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)

    def close(self):
        self.f.close()
        super().close()


def test_disk_full_during_a_save_is_one_line_and_keeps_the_previous(tmp_path, sample_cache,
                                                                    monkeypatch):
    # ENOSPC injected in-process: the optimizer file's writes fail after 100 kB, as on a
    # full file system (the real one, on a small tmpfs, is the next test).
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(out, sample_cache, steps=4, save_interval=2))
    engine = trainer.engine.checkpoint_engine
    real_save = engine.save
    saves = []

    def save(state_dict, path):
        saves.append(path)
        if "global_step4" in path and path.endswith(OPTIM):
            stream = _FullDisk(path, 100_000)
            try:
                torch.save(state_dict, stream)
            finally:
                stream.close()
        return real_save(state_dict, path)

    monkeypatch.setattr(engine, "save", save)
    with pytest.raises(OutputError) as err:
        trainer.train()
    d = ckpt_dir(out)
    message = str(err.value)
    assert message.startswith(f"no space left on device: checkpoint {d}/global_step4 "
                              f"needs about ")
    assert "\n" not in message and "MB free on that file system" in message
    first_size = sum(os.path.getsize(os.path.join(d, "global_step2", n))
                     for n in os.listdir(os.path.join(d, "global_step2")) if n != MARKER)
    assert f"needs about {first_size / 1e6:,.1f} MB" in message
    assert not os.path.exists(os.path.join(d, "global_step4"))   # no half-written tag
    assert open(os.path.join(d, LATEST)).read() == "global_step2"
    assert resumable_tag(d) == "global_step2"


def _mount_tmpfs(path, options):
    """Mount a tmpfs at ``path`` (root only); False where this machine does not allow it."""
    import subprocess

    if os.geteuid() != 0:
        return False
    os.makedirs(path, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", path],
                          capture_output=True)
    return done.returncode == 0


def _umount(path):
    import subprocess

    subprocess.run(["umount", path], capture_output=True)


def test_a_really_full_file_system_is_reported_as_such(tmp_path, xdg_cache, monkeypatch,
                                                      capsys):
    # A 2 MB tmpfs holds one checkpoint of this model (1.4 MB) and not two: torch's writer
    # reports the failed write as "unexpected pos" and loses the errno.
    from alum.pretrain import cli

    mnt = str(tmp_path / "small_disk")
    if not _mount_tmpfs(mnt, "size=2m"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights)")
    try:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg_cache)
        rc = cli.main(["--output-dir", f"{mnt}/run", "--train-steps", "4", "--save-interval",
                       "2", "--keep-last", "0", "--hidden-size", "32", "--num-layers", "1",
                       "--micro-batch-size", "4", "--seq-length", "32", "--no-alum",
                       "--eval-interval", "0", "--tensorboard", "false",
                       "--progress-bar", "false"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 1
        assert err[-1].startswith(f"alum-pretrain: error: no space left on device: checkpoint "
                                  f"{mnt}/run/checkpoints/global_step4 needs about ")
        d = f"{mnt}/run/checkpoints"
        assert resumable_tag(d) == "global_step2"
        assert not os.path.exists(os.path.join(d, "global_step4"))
    finally:
        _umount(mnt)


def test_a_read_only_output_is_one_line(tmp_path, capsys):
    from alum.pretrain import cli

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert cli.main(["--output-dir", str(not_a_dir / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"alum-pretrain: error: cannot write run directory {not_a_dir}/run: "
                   f"Not a directory")
    mnt = str(tmp_path / "ro")
    if not _mount_tmpfs(mnt, "ro,size=1m"):
        pytest.skip("cannot mount a read-only tmpfs here (needs root and mount rights)")
    try:
        assert cli.main(["--output-dir", f"{mnt}/run"]) == 1
        assert capsys.readouterr().err.strip() == (
            f"alum-pretrain: error: cannot write run directory {mnt}/run: read-only file system")
    finally:
        _umount(mnt)


def test_summary_after_a_resume_reports_this_runs_first_steps(tmp_path, sample_cache):
    from alum.pretrain.cli import closing_summary

    kw = dict(steps=6, save_interval=3)
    out = tmp_path / "run"
    first = Trainer(tiny_config(out, sample_cache, max_steps=3, **kw)).train()
    cfg = tiny_config(out, sample_cache, resume="auto", **kw)
    second = Trainer(cfg).train()
    line = next(l for l in closing_summary(second, cfg).splitlines()
                if l.startswith("train MLM loss"))
    assert f"{second.losses[0]:.3f} (first 1 steps after resuming at step 3)" in line
    assert f"{first.losses[0]:.3f}" not in line.split("->")[0] or \
        f"{first.losses[0]:.3f}" == f"{second.losses[0]:.3f}"


def test_a_run_killed_in_its_first_save_starts_over_without_asking(tmp_path, sample_cache,
                                                                   caplog):
    # No checkpoint was ever completed: an unfinished save is debris, not work to keep.
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(out, sample_cache, steps=2, save_interval=1))
    real_save = trainer.engine.save_checkpoint

    def dies(save_dir, tag=None, **kwargs):
        real_save(save_dir, tag=tag, **kwargs)
        raise KeyboardInterrupt("killed while saving")

    trainer.engine.save_checkpoint = dies
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    d = ckpt_dir(out)
    assert [t for _, t in all_tags(d)] == ["global_step1"] and not os.path.exists(
        os.path.join(d, LATEST))
    with caplog.at_level(logging.WARNING, logger="alum.pretrain"):
        summary = Trainer(tiny_config(out, sample_cache, steps=2, save_interval=1,
                                      resume="auto")).train()
    assert "holds only unfinished saves" in caplog.text
    assert summary.start_step == 0 and summary.end_step == 2
    assert incomplete_reason(d, "global_step2") is None
