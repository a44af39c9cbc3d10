"""Every pre-training ALUM path updates δ through the kernels' dispatcher
(``alum.kernels.adv_project``: the fused CUDA kernel when built, else the reference):
the fast order, the lean order and the pipeline's ascent."""
import pytest
import torch

import alum.kernels.adv_project_dispatch as dispatch
from alum import AlumConfig
from alum.pretrain.config import ModelChoice
from alum.pretrain.lean_order import lean_micro_batch
from alum.pretrain.mlm_step import module_runner
from alum.pretrain.mlm_step import kl_positions, mlm_micro_batch
from alum.pretrain.pipeline_alum import MicroBatchState, PipelineAlumStep

from .test_alum_orders import _batch
from .test_training import RELATIVE


@pytest.fixture
def calls(monkeypatch):
    seen = []
    real = dispatch.adv_project

    def spy(delta, grad, config, mask=None, scale=None):
        seen.append(tuple(delta.shape))
        return real(delta, grad, config, mask, scale)

    monkeypatch.setattr(dispatch, "adv_project", spy)
    return seen


@pytest.fixture(scope="module")
def model():
    from alum.parallel import initialize_parallel
    from alum.pretrain.model_builder import build_megatron_bert

    initialize_parallel(1, 1, seed=3)
    return build_megatron_bert(ModelChoice(hidden_size=32, num_layers=2, dropout=0.0),
                               vocab_size=101, pad_token_id=0, seq_length=12)


@pytest.mark.parametrize("steps", [1, 2])
def test_fast_order_calls_the_dispatcher_once_per_ascent_step(model, calls, steps):
    out = mlm_micro_batch(model, _batch(), AlumConfig(**dict(RELATIVE, steps=steps)), True,
                          "masked", run_seed=11)
    assert not out.adv.skipped
    assert calls == [(3, 12, 32)] * steps


@pytest.mark.parametrize("steps", [1, 2])
def test_lean_order_calls_the_dispatcher_once_per_ascent_step(model, calls, steps):
    out = lean_micro_batch(module_runner(model), _batch(), AlumConfig(**dict(RELATIVE,
                                                                             steps=steps)),
                           True, "masked", run_seed=11)
    assert not out.adv.skipped
    assert calls == [(3, 12, 32)] * steps


def test_pipeline_ascent_updates_delta_through_the_layouts_dispatcher(model, calls):
    cfg = AlumConfig(**RELATIVE)
    batch = _batch()
    embeds = model.embed(batch["input_ids"], batch["token_type_ids"]).detach()
    # The pipeline step's state for one micro-batch on the first stage, without a schedule.
    step = PipelineAlumStep(model, [batch], cfg, "masked", None, schedule=None,
                            device=torch.device("cpu"))
    state = MicroBatchState(batch, kl_positions(batch, "masked"), embeds=embeds)
    state.step = step._alum_step(state)
    state.step.delta = torch.zeros_like(embeds)
    step._update_deltas([state], [torch.randn_like(embeds)])
    assert calls == [tuple(embeds.shape)]
    delta = state.step.delta
    assert delta.abs().sum() > 0 and not delta.requires_grad
