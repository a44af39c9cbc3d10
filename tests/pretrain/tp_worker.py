"""Worker of the tensor/pipeline-parallel launch (tests/pretrain/test_tensor_parallel.py).

Run by ``deepspeed --num_gpus 2`` (gloo on CPU): trains the same tiny run at TP=2,
at TP=2 with sequence parallel (ZeRO-2, so the sequence-parallel gradient hooks
meet DeepSpeed's own), and at PP=2 with ZeRO-1 and ZeRO-0 (megatron-core's 1F1B
schedule over the accumulation micro-batches), one after the other in the same
two processes, and rank 0 writes each run's losses and final validation as JSON.
"""
import json
import sys

from alum.pretrain import Trainer
from alum.pretrain.config import PretrainConfig


def main(config_json: str, out_json: str, zero0: str) -> None:
    base = json.load(open(config_json))
    results = {}
    for name, tp, sp, pp, stage in (("tp2", 2, False, 1, "zero1"),
                                    ("tp2_sp", 2, True, 1, "zero2"),
                                    ("pp2", 1, False, 2, "zero1"),
                                    ("pp2_zero0", 1, False, 2, zero0)):
        values = json.loads(json.dumps(base))
        values["train"].update(tensor_parallel_size=tp, sequence_parallel=sp,
                               pipeline_parallel_size=pp, ds_config=stage)
        values["checkpoint"]["output_dir"] += "_" + name
        trainer = Trainer(PretrainConfig.from_dict(values))
        summary = trainer.train()
        results[name] = {"losses": summary.losses, "valid": summary.evals[-1],
                         "dp_size": trainer.dp_size, "world": trainer.world}
    if trainer.rank == 0:
        json.dump(results, open(out_json, "w"))


if __name__ == "__main__":
    paths = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    main(paths[0], paths[1], paths[2])
