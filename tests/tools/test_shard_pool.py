"""The job pool of alum-preprocess: the parent works alongside its helpers,
results come back in job order, and a helper's failure (an exception, an
exception that cannot be pickled, a kill) ends the run with an error, never
a hang.

The jobs here are small tuples run by `_job` below (helpers import it from
this module). Job 0 waits until job 1 has started in another process, so the
two ran at the same time in two processes whichever took which.
"""
import os
import signal
import time

import pytest

from alum.tools.shard_pool import WorkerTraceback, run_jobs

WAIT_S = 60


class _Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("cannot pickle this")


def _job(job, progress=None):
    index, flag_dir, action = job
    if progress is not None:
        progress(1, index, 0)
    flag = os.path.join(flag_dir, "job1-started")
    if index == 0:
        deadline = time.monotonic() + WAIT_S
        while not os.path.exists(flag):
            if time.monotonic() > deadline:
                raise TimeoutError("job 1 never started in another process")
            time.sleep(0.01)
    if index == 1:
        open(flag, "w").close()
        if action == "raise":
            raise ValueError("bad job 1")
        if action == "unpicklable":
            raise _Unpicklable("job 1 failed oddly")
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
    return index, os.getpid()


def _jobs(tmp_path, action="", count=6):
    return [(i, str(tmp_path), action) for i in range(count)]


def test_parent_and_helper_share_jobs_and_results_keep_job_order(tmp_path):
    seen = []
    results = run_jobs(_jobs(tmp_path), 2, lambda *inc: seen.append(inc), process=_job)
    assert [index for index, _ in results] == list(range(6))
    pids = {index: pid for index, pid in results}
    assert pids[0] != pids[1]  # job 0 waited for job 1 in another process
    assert os.getpid() in (pids[0], pids[1])  # with 2 workers, one of them is the parent
    assert sorted(tokens for _, tokens, _ in seen) == list(range(6))  # every job's progress


def test_one_worker_runs_in_this_process(tmp_path):
    # Job 0 would wait for job 1 forever in one process: let job 1 come first.
    jobs = list(reversed(_jobs(tmp_path)))
    results = run_jobs(jobs, 1, lambda *inc: None, process=_job)
    assert [index for index, _ in results] == list(reversed(range(6)))
    assert {pid for _, pid in results} == {os.getpid()}


def test_helper_exception_is_raised_with_its_traceback(tmp_path):
    with pytest.raises(ValueError, match="bad job 1") as info:
        run_jobs(_jobs(tmp_path, "raise"), 2, lambda *inc: None, process=_job)
    assert isinstance(info.value.__cause__, WorkerTraceback)
    assert "bad job 1" in str(info.value.__cause__) and "_job" in str(info.value.__cause__)


def test_unpicklable_helper_exception_arrives_as_text(tmp_path):
    with pytest.raises(RuntimeError, match="_Unpicklable: job 1 failed oddly"):
        run_jobs(_jobs(tmp_path, "unpicklable"), 2, lambda *inc: None, process=_job)


def test_killed_helper_is_an_error_not_a_hang(tmp_path):
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited abruptly"):
        run_jobs(_jobs(tmp_path, "kill"), 2, lambda *inc: None, process=_job)
    assert time.monotonic() - started < WAIT_S
