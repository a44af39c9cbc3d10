"""Running shard jobs over --workers processes, with progress from inside shards.

With N workers the parent is one of them: it starts N - 1 helpers, each running
``_helper_loop`` in a ``concurrent.futures.ProcessPoolExecutor``, and tokenizes
too. The parent has already imported numpy and the tokenizers library and
loaded the tokenizer (for the output's dtype), so it starts at once while the
helpers start up; an idle parent would leave one core's worth of start-up on
the wall clock (measured: a helper takes its first piece 0.2-0.3 s after the
pool starts, the parent at 0.07 s; docs/data.md, "Throughput"). This is why
the pool does not map the jobs over the executor directly (``pool.map`` would
leave the parent idle): the executor runs the helpers (start, results,
exceptions with their tracebacks, a helper killed), the hand-out stays ours.

Jobs are handed out in order from a shared counter: whoever is free takes the
next one, so a slow job does not idle the others (with the guided sizes of
tools/preprocess_shard.py the workers end within 0.1 s of each other).
Results come back in job order whatever order the jobs finish in. Helpers
send (documents, tokens, bytes) increments through a queue so the progress
bar moves during long shards, not only when a shard ends; the parent forwards
them whenever it reports its own progress and while it waits for the
helpers' last jobs.
"""
import concurrent.futures as cf
import multiprocessing as mp
import pickle
from concurrent.futures.process import BrokenProcessPool

from .preprocess_shard import process_shard

POLL_S = 0.1


class WorkerTraceback(Exception):
    """The traceback of an exception raised in a helper process (its cause, when re-raised)."""


_HELPER = {}
"""In a helper process: the shared job counter and the progress queue (``_init_helper``)."""


def _init_helper(next_job, progress):
    _HELPER["next_job"], _HELPER["progress"] = next_job, progress


def _helper_loop(process, jobs):
    """A helper: take jobs until none is left; returns {index: result}. A job's exception
    ends the loop and travels back through the future (as text if it cannot be pickled)."""
    next_job, progress = _HELPER["next_job"], _HELPER["progress"]

    def report(docs, tokens, nbytes):
        progress.put((docs, tokens, nbytes))

    done = {}
    while True:
        index = _take(next_job, len(jobs))
        if index is None:
            return done
        try:
            done[index] = process(jobs[index], progress=report)
        except BaseException as e:
            try:
                pickle.dumps(e)
            except Exception:  # an exception that cannot travel: its text does
                raise RuntimeError(f"{type(e).__name__}: {e}") from None
            raise


def _take(next_job, count):
    with next_job.get_lock():
        index = next_job.value
        if index >= count:
            return None
        next_job.value = index + 1
    return index


def _context():
    # forkserver: helpers are forked from a fresh single-threaded server, not from
    # this process. A fork of this process deadlocks when it already ran threads
    # that hold locks at the fork (the Rust tokenizer's pool, torch's intra-op
    # threads): a library call after other tokenizing, or the test suite, hung
    # in the workers' first encode_batch. Helpers import only numpy and the
    # tokenizers library, so the server's start costs little.
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def _forward(progress, on_progress):
    """Hands the helpers' queued progress to ``on_progress`` (a SimpleQueue's put is done
    writing when it returns, so after a helper's future is done all it sent is here)."""
    while not progress.empty():
        on_progress(*progress.get())


def _raise_failure(future):
    """A finished helper's exception, with its traceback as the cause; a helper that
    died (killed: out of memory?) as a RuntimeError."""
    err = future.exception()
    if err is None:
        return
    if isinstance(err, BrokenProcessPool):
        raise RuntimeError(f"a preprocessing worker exited abruptly (killed, out of "
                           f"memory?): {err}") from None
    trace = err.__cause__
    raise err from WorkerTraceback(str(trace) if trace is not None else "")


def run_jobs(jobs, workers: int, on_progress, process=process_shard):
    """`process(job, progress=...)` for all jobs (a module-level function: helpers
    import it); returns the results in job order."""
    if workers <= 1 or len(jobs) <= 1:
        return [process(job, progress=on_progress) for job in jobs]
    ctx = _context()
    next_job = ctx.Value("l", 0)
    progress = ctx.SimpleQueue()
    helpers = min(workers, len(jobs)) - 1
    pool = cf.ProcessPoolExecutor(helpers, mp_context=ctx, initializer=_init_helper,
                                  initargs=(next_job, progress))
    done = {}
    try:
        futures = [pool.submit(_helper_loop, process, jobs) for _ in range(helpers)]

        def check():
            _forward(progress, on_progress)
            for f in futures:
                if f.done():
                    _raise_failure(f)

        def report(docs, tokens, nbytes):
            on_progress(docs, tokens, nbytes)
            check()

        while True:
            index = _take(next_job, len(jobs))
            if index is None:
                break
            done[index] = process(jobs[index], progress=report)
            check()
        while not all(f.done() for f in futures):
            cf.wait(futures, timeout=POLL_S, return_when=cf.FIRST_EXCEPTION)
            check()
        check()
        for f in futures:
            done.update(f.result())
        if len(done) < len(jobs):
            raise RuntimeError("preprocessing workers ended with jobs unreported")
        return [done[i] for i in range(len(jobs))]
    finally:
        with next_job.get_lock():
            next_job.value = len(jobs)  # a failure: helpers take no further job
        pool.shutdown(wait=True, cancel_futures=True)
