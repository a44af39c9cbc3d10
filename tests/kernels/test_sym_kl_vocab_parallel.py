"""The vocab-parallel symmetric KL: two vocabulary shards simulated in one process (the
statistics' combination and each shard's gradient), and a 2-process gloo group (the
autograd op and its value-and-gradient form)."""
import pytest
import torch
import torch.multiprocessing as mp

from alum.kernels.sym_kl import FusedSymmetricKLFunction, row_weights, sym_kl_stats_torch
from alum.kernels.sym_kl_vocab_parallel import combine_shard_stats

from .cases import DTYPES, assert_sym_kl_close, make_logits, reference_sym_kl_float64


def _simulate_tp(adv, clean, mask, bounds):
    """Every shard's loss and gradients, each shard seeing the others' statistics as an
    all-reduce would give them."""
    weight = row_weights(tuple(adv.shape[:-1]), mask, adv.device)
    a2 = adv.reshape(-1, adv.shape[-1])
    c2 = clean.reshape(-1, clean.shape[-1])
    slices = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
    shard_stats = [sym_kl_stats_torch(a2[:, s], c2[:, s], weight, False) for s in slices]
    losses, grads_adv, grads_clean = [], [], []
    for i, s in enumerate(slices):
        others = [st for j, st in enumerate(shard_stats) if j != i]
        reduce = (lambda own, others=others, i=i:
                  combine_shard_stats(others[:i] + [own] + others[i:]))
        a = a2[:, s].detach().clone().requires_grad_()
        c = c2[:, s].detach().clone().requires_grad_()
        loss = FusedSymmetricKLFunction.apply(a, c, weight, False, False, reduce)
        loss.backward()
        losses.append(loss.detach())
        grads_adv.append(a.grad)
        grads_clean.append(c.grad)
    shape = adv.shape
    return (losses, torch.cat(grads_adv, -1).reshape(shape),
            torch.cat(grads_clean, -1).reshape(shape))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("vocab,bounds", [(97, (0, 48, 97)), (1021, (0, 300, 1021))])
def test_two_simulated_shards_give_the_full_loss_and_gradient(dtype, vocab, bounds):
    adv, clean = make_logits((2, 3, vocab), dtype, seed=vocab)
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    losses, ga, gc = _simulate_tp(adv, clean, mask, list(bounds))
    expected = reference_sym_kl_float64(adv, clean, mask)
    torch.testing.assert_close(losses[0], losses[1])  # the same loss on every rank
    assert_sym_kl_close(losses[0], ga, gc, expected, dtype, f"TP=2 {dtype} V={vocab}")


def test_three_shards_and_a_masked_row():
    adv, clean = make_logits((4, 101), torch.float32, seed=5)
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
    losses, ga, gc = _simulate_tp(adv, clean, mask, [0, 30, 31, 101])
    assert_sym_kl_close(losses[2], ga, gc, reference_sym_kl_float64(adv, clean, mask),
                        torch.float32, "TP=3")
    assert bool((ga[1] == 0).all())


def test_without_a_process_group_it_is_the_single_device_op():
    from alum.kernels import vocab_parallel_symmetric_kl
    adv, clean = make_logits((3, 97), torch.float32, seed=6)
    a = adv.clone().requires_grad_()
    c = clean.clone().requires_grad_()
    loss = vocab_parallel_symmetric_kl(a, c)
    loss.backward()
    assert_sym_kl_close(loss.detach(), a.grad, c.grad, reference_sym_kl_float64(adv, clean),
                        torch.float32, "world size 1")


@pytest.mark.slow
def test_two_process_gloo_group(tmp_path):
    init_file = str(tmp_path / "init")
    mp.start_processes(_spawn_entry, args=(2, init_file, str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    adv, clean = make_logits((2, 3, 97), torch.float32, seed=31)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    exp_loss, exp_ga, exp_gc = reference_sym_kl_float64(adv, clean, mask)
    ga = torch.cat([r["grad_adv"] for r in results], -1)
    gc = torch.cat([r["grad_clean"] for r in results], -1)
    grad = torch.cat([r["grad"] for r in results], -1)
    for r in results:
        assert_sym_kl_close(r["loss"], ga, gc, (exp_loss, exp_ga, exp_gc), torch.float32,
                            f"gloo rank slice {r['slice']}")
        assert_sym_kl_close(r["value"], grad, -grad, (exp_loss, exp_ga, exp_gc),
                            torch.float32, f"value_and_grad, gloo rank slice {r['slice']}")


def _spawn_entry(rank, world, init_file, out_dir):
    from tests.kernels.vocab_parallel_worker import run
    run(rank, world, init_file, out_dir)
