"""A world of one process with megatron's parallel state (TP=1, PP=1) for model tests."""
import pytest


@pytest.fixture(scope="module")
def single_process_parallel():
    from alum.parallel import destroy_parallel, initialize_parallel

    initialize_parallel(tp=1, pp=1, seed=1234)
    yield
    destroy_parallel()
