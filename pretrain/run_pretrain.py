"""The script the ``deepspeed`` launcher runs: ``deepspeed --num_gpus N pretrain/run_pretrain.py ...``.

Same options as ``alum-pretrain`` (``--help``). The launcher starts one process
per device with RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* set (and a
``--local_rank`` argument, accepted and ignored); on a CPU-only machine the
processes talk over gloo. This file is runnable by path, so it does not rely on
relative imports.
"""
import sys

from alum.pretrain.cli import main

if __name__ == "__main__":
    sys.exit(main())
