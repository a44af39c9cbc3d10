"""Worker of tests/pretrain/test_alum_embedding_grad_parallel.py, run by ``deepspeed
--num_gpus 2`` (gloo): alum_parallel_worker's loop over two layouts only, PP=2 (the
pipeline's lean passes) and TP=2 with sequence parallel (lean order)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import alum_parallel_worker as worker  # noqa: E402

worker.RUNS = (("pp2", 1, False, 2, 2, "zero1", "auto"),
               ("tp2_sp_lean", 2, True, 1, 2, "zero2", "lean"))

if __name__ == "__main__":
    paths = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    worker.main(paths[0], paths[1])
