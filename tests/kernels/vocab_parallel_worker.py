"""One rank of the 2-process gloo check of vocab_parallel_symmetric_kl (spawned by
test_sym_kl_vocab_parallel.py): each rank holds an odd-sized vocabulary slice, computes
the loss and its slice's gradients (through autograd, and without a graph by
vocab_parallel_symmetric_kl_value_and_grad), and saves them for the parent to compare."""
import os

import torch
import torch.distributed as dist


def run(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        from alum.kernels import vocab_parallel_symmetric_kl
        from alum.kernels.sym_kl_vocab_parallel import \
            vocab_parallel_symmetric_kl_value_and_grad
        from tests.kernels.cases import make_logits
        adv, clean = make_logits((2, 3, 97), torch.float32, seed=31)
        mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
        bounds = [0, 48, 97]
        sl = slice(bounds[rank], bounds[rank + 1])
        a = adv[..., sl].clone().requires_grad_()
        c = clean[..., sl].clone().requires_grad_()
        loss = vocab_parallel_symmetric_kl(a, c, mask)
        loss.backward()
        value, grad = vocab_parallel_symmetric_kl_value_and_grad(a, c, mask)
        torch.save({"loss": loss.detach(), "grad_adv": a.grad, "grad_clean": c.grad,
                    "value": value, "grad": grad,
                    "slice": (bounds[rank], bounds[rank + 1])},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
