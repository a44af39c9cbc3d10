"""ALUM fine-tuning updates δ through the kernels' dispatcher (``alum.kernels.adv_project``:
the fused CUDA kernel when built, else the reference), once per ascent step."""
import os

import alum.kernels.adv_project_dispatch as dispatch
from alum.finetune import cli

from .conftest import FIXTURES


def test_finetuning_calls_the_dispatcher_once_per_ascent_step(tiny_bert_dir, tmp_path,
                                                              monkeypatch):
    seen = []
    real = dispatch.adv_project

    def spy(delta, grad, config, mask=None, scale=None):
        seen.append(config.steps)
        return real(delta, grad, config, mask, scale)

    monkeypatch.setattr(dispatch, "adv_project", spy)
    summary = cli.run(cli.build_parser().parse_args([
        "--model", tiny_bert_dir, "--train", os.path.join(FIXTURES, "sst2_train.tsv"),
        "--output", str(tmp_path / "m"), "--epochs", "1", "--batch-size", "8",
        "--max-steps", "3", "--alum", "--adv-direction", "ascent", "--adv-steps", "2",
        "--no-progress"]))
    assert summary["steps"] == 3
    assert seen == [2] * 6  # 3 optimizer steps x K = 2 ascent steps
