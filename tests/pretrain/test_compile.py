"""``--compile``: config rules, the guarded fallback, and compiled = eager on CPU."""
import logging

import pytest
import torch

import alum.pretrain.compile as compile_mod
from alum.pretrain.config import ModelChoice, PretrainConfig, TrainConfig


@pytest.mark.parametrize("changes, match", [
    (dict(activation_checkpointing=True), "activation_checkpointing"),
    (dict(tensor_parallel_size=2), "tensor_parallel_size=1"),
    (dict(pipeline_parallel_size=2, grad_accum_steps=2), "pipeline_parallel_size=1"),
    (dict(ds_config="zero3"), "ZeRO-3"),
])
def test_compile_rejected_with_what_it_cannot_work_with(changes, match):
    with pytest.raises(ValueError, match=f"TrainConfig.compile=True: .*{match}"):
        TrainConfig(compile=True, **changes)
    TrainConfig(compile=False, **changes)  # the same run without compile is fine


def test_compile_rejected_for_an_hf_model():
    with pytest.raises(ValueError, match="TrainConfig.compile=True: needs model_kind='megatron'"):
        PretrainConfig(model=ModelChoice(model_kind="hf", hf_model="/nowhere"),
                       train=TrainConfig(compile=True))
    assert PretrainConfig(train=TrainConfig(compile=True, ds_config="zero2")).train.compile


def test_compile_is_a_command_line_option():
    from alum.pretrain.cli import build_parser

    args = build_parser().parse_args(["--compile", "true"])
    assert args.compile is True
    assert build_parser().parse_args([]).compile is False


def build(dropout=0.0):
    from alum.models import ModelConfig
    from alum.parallel import ParallelConfig, build_model

    cfg = ModelConfig.named("tiny", vocab_size=211, hidden_size=48, num_attention_heads=3,
                            ffn_hidden_size=80, hidden_dropout=dropout,
                            attention_dropout=dropout)
    model, = build_model(cfg, ParallelConfig())
    return model


@pytest.fixture(scope="module")
def parallel():
    from alum.parallel import destroy_parallel, initialize_parallel

    initialize_parallel(tp=1, pp=1, seed=5)
    yield
    destroy_parallel()


def test_fallback_leaves_the_model_eager_with_one_warning(parallel, monkeypatch, caplog):
    monkeypatch.setattr(compile_mod, "_PROBED", {"cpu": "InductorError: no compiler"})
    model = build()
    forwards = [layer.forward for layer in model.layers]
    with caplog.at_level(logging.WARNING, logger="alum.pretrain"):
        assert compile_mod.compile_layers(model, torch.device("cpu")) is False
    warnings = [r for r in caplog.records if "torch.compile does not work here" in r.message]
    assert len(warnings) == 1 and "no compiler" in warnings[0].message
    assert all(layer._compiled_call_impl is None for layer in model.layers)
    assert [layer.forward for layer in model.layers] == forwards


def test_compile_needs_encoder_layers():
    with pytest.raises(ValueError, match="no encoder layers"):
        compile_mod.compile_layers(torch.nn.Linear(2, 2))


def loss_and_grads(model, ids, mask, labels):
    model.zero_grad(set_to_none=True)
    rows = labels.ne(-100)
    loss = model.mlm_loss(model(ids, mask, rows=rows), labels[rows])
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.slow
def test_compiled_layers_equal_eager_loss_and_grads(parallel):
    """Dropout off: the compiled model's loss and every gradient equal the eager one's,
    for a batch without padding (no mask) and one with (boolean mask); the parameter
    names stay those of the eager model."""
    reason = compile_mod.compile_unavailable_reason(torch.device("cpu"))
    if reason is not None:
        pytest.skip(f"torch.compile does not work on this machine: {reason}")
    from torch._dynamo.utils import counters

    eager, compiled = build(), build()
    assert compile_mod.compile_layers(compiled, torch.device("cpu")) is True
    counters.clear()
    assert list(compiled.state_dict()) == list(eager.state_dict())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 211, (3, 19), generator=g)
    labels = torch.full_like(ids, -100)
    picked = torch.rand(3, 19, generator=g) < 0.3
    labels[picked] = ids[picked]
    labels[:, 1] = ids[:, 1]
    for padded in (False, True):
        mask = torch.ones_like(ids)
        if padded:
            mask[1, 11:] = 0
        ref_loss, ref_grads = loss_and_grads(eager, ids, mask, labels)
        loss, grads = loss_and_grads(compiled, ids, mask, labels)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        for name, ref in ref_grads.items():
            scale = ref.abs().max().clamp_min(1e-6)
            torch.testing.assert_close(grads[name] / scale, ref / scale, rtol=1e-4,
                                       atol=1e-4, msg=name)
        assert all(layer._compiled_call_impl is not None for layer in compiled.layers)
    # Each layer is one graph (no break at megatron's linears or the attention), which
    # is what lets inductor fuse across the bias adds, GELU, residuals and LayerNorms.
    assert not counters["graph_break"], dict(counters["graph_break"])


@pytest.mark.slow
def test_compiled_dropout_replays_from_the_generator_state(parallel):
    """With dropout on, a compiled forward is a function of the generator state (what
    ALUM's lean order and activation replays rely on): equal under the same seed,
    different under another."""
    if compile_mod.compile_unavailable_reason(torch.device("cpu")) is not None:
        pytest.skip("torch.compile does not work on this machine")
    model = build(dropout=0.2).train()
    compile_mod.compile_layers(model, torch.device("cpu"))
    ids = torch.randint(1, 211, (2, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)

    def run(seed):
        torch.manual_seed(seed)
        from megatron.core import tensor_parallel

        tensor_parallel.model_parallel_cuda_manual_seed(seed)
        with torch.no_grad():
            return model(ids, mask)

    first, again, other = run(7), run(7), run(8)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.slow
@pytest.mark.parametrize("order", ["fast", "lean"])
def test_trainer_with_compile_equals_eager(tmp_path, sample_cache, order):
    """The training loop with ``compile``: the same losses as without it (dropout off),
    standard MLM then ALUM (its frozen-parameter ascent passes compile separately)."""
    from alum import AlumConfig
    from alum.pretrain import Trainer

    from .conftest import tiny_config

    if compile_mod.compile_unavailable_reason(torch.device("cpu")) is not None:
        pytest.skip("torch.compile does not work on this machine")
    alum = AlumConfig(start_step=2, alpha=10.0, noise_std=1e-3, step_size=0.1, epsilon=0.1,
                      steps=1, norm="l2", level="token", update="project",
                      epsilon_scale="relative")
    runs = {}
    for compiled in (False, True):
        cfg = tiny_config(tmp_path / f"c{compiled}", sample_cache, steps=4, alum=alum,
                          layers=2, compile=compiled)
        cfg.alum_order = order
        trainer = Trainer(cfg)
        assert all((layer._compiled_call_impl is not None) == compiled
                   for layer in trainer.engine.module.layers)
        runs[compiled] = trainer.train()
    assert runs[True].alum_steps == 2
    assert runs[True].losses == pytest.approx(runs[False].losses, rel=1e-5, abs=1e-6)
    assert runs[True].adv_means["adv_loss"] == pytest.approx(
        runs[False].adv_means["adv_loss"], rel=1e-4)
