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


def test_reinitialising_destroys_the_previous_groups():
    """Each set-up's groups are destroyed when the layout is set up again: their gloo
    threads do not pile up in a process that initialises many times (a test session)."""
    import os

    import torch.distributed as dist
    from megatron.core import parallel_state

    from alum.parallel.state import _megatron_groups

    def threads() -> int:
        return len(os.listdir(f"/proc/{os.getpid()}/task"))

    initialize_parallel(tp=1, pp=1, seed=1)
    try:
        first = _megatron_groups(parallel_state)
        assert first, "megatron-core holds no process group: the scan finds nothing"
        after_first = threads()
        for seed in (2, 3, 4):
            initialize_parallel(tp=1, pp=1, seed=seed)
        for group in first:  # torch.distributed no longer knows the old groups
            with pytest.raises((KeyError, ValueError)):
                dist.get_process_group_ranks(group)
        del first, group  # a group's threads stop when its last reference goes
        # Each set-up starts about fifty gloo threads; three more set-ups that leaked them
        # would add ~150.
        assert threads() <= after_first + 5
    finally:
        destroy_parallel()
