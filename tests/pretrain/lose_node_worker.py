"""Worker of tests/pretrain/test_multinode.py's lost-node test: one rank of a run launched
as two nodes, whose second rank dies (``kill``: SIGKILL, as a crashed node's processes)
or freezes (``freeze``: SIGSTOP, as a node that hangs or loses its network) in the
middle of optimizer step ``at_step`` (in the forward of its second micro-batch, after
its first, so its peer is in the step too). Before it does, it writes the time to
``<out_dir>/lost_at``. ``deepspeed ... lose_node_worker.py CONFIG MODE AT_STEP OUT_DIR``.
"""
import json
import os
import signal
import sys
import time

from alum.pretrain import Trainer
from alum.pretrain.config import PretrainConfig


def main(config_json: str, mode: str, at_step: int, out_dir: str) -> None:
    trainer = Trainer(PretrainConfig.from_dict(json.load(open(config_json))))
    forwards = {"n": 0}

    def lose_the_node(module, args):
        if trainer.rank != 1 or trainer.step != at_step:
            return
        forwards["n"] += 1
        if forwards["n"] == 2:
            with open(os.path.join(out_dir, "lost_at"), "w") as f:
                f.write(str(time.time()))
            os.kill(os.getpid(), signal.SIGKILL if mode == "kill" else signal.SIGSTOP)

    trainer.engine.module.register_forward_pre_hook(lose_the_node)
    trainer.train()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    main(args[0], args[1], int(args[2]), args[3])
