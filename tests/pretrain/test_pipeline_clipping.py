"""alum.pretrain.pipeline_loop.take_clipping: which runs the pipeline strategy clips itself,
and that DeepSpeed's own clipping is then switched off in the config it is built from
(the equality of such a run with PP = 1 is tests/pretrain/test_tensor_parallel.py's
``pp2_zero0``)."""
from deepspeed.runtime.constants import GRADIENT_CLIPPING_DEFAULT

from alum.pretrain.pipeline_loop import take_clipping


def test_fp32_without_zero_takes_the_norm_and_switches_deepspeed_off():
    ds = {"gradient_clipping": 0.5, "zero_optimization": {"stage": 0}}
    assert take_clipping(ds, "fp32", 0) == 0.5
    assert ds["gradient_clipping"] == 0.0


def test_an_absent_norm_is_deepspeeds_default_not_zero():
    ds = {}
    assert take_clipping(ds, "fp32", 0) == float(GRADIENT_CLIPPING_DEFAULT)
    assert ds["gradient_clipping"] == 0.0


def test_zero_and_mixed_precision_leave_clipping_to_deepspeed():
    for precision, stage in (("fp32", 1), ("fp32", 3), ("bf16", 0), ("fp16", 0)):
        ds = {"gradient_clipping": 0.5}
        assert take_clipping(ds, precision, stage) is None
        assert ds == {"gradient_clipping": 0.5}
