"""initialize_parallel in a single process, the DeepSpeed mpu adapter, teardown."""
import pytest

from alum.parallel import destroy_parallel, initialize_parallel, is_initialized, mpu


def test_single_process_world_and_mpu():
    initialize_parallel(tp=1, pp=1, seed=3)
    try:
        assert is_initialized()
        assert mpu.get_model_parallel_world_size() == 1
        assert mpu.get_model_parallel_rank() == 0
        assert mpu.get_tensor_model_parallel_world_size() == 1
        assert mpu.get_data_parallel_world_size() == 1
        assert mpu.get_data_parallel_rank() == 0
        assert mpu.get_data_parallel_group_ranks() == [0]
        assert mpu.get_pipe_parallel_world_size() == 1
        assert mpu.get_pipeline_model_parallel_rank() == 0
        assert not hasattr(mpu, "get_sequence_parallel_world_size")  # Ulysses in DeepSpeed
        initialize_parallel(tp=1, pp=1, seed=4)                      # re-initialise: fine
        with pytest.raises(ValueError, match="not a multiple"):
            initialize_parallel(tp=2, pp=1)
    finally:
        destroy_parallel()
    assert not is_initialized()


def test_deepspeed_shm_build_is_skipped_on_cpu():
    from alum.parallel import skip_shm_comm_build

    assert skip_shm_comm_build() is True
    import sys

    # sys.modules: the attribute deepspeed.comm.torch is the torch package itself.
    assert sys.modules["deepspeed.comm.torch"].build_shm_op() is None
