"""Running shard jobs over --workers processes, with progress from inside shards.

With N workers the parent is one of them: it starts N - 1 helper processes
and tokenizes too. The parent has already imported numpy and the tokenizers
library and loaded the tokenizer (for the output's dtype), so it starts at
once while the helpers start up; an idle parent would leave one core's worth
of start-up on the wall clock.

Jobs are handed out in order from a shared counter: whoever is free takes the
next one, so a slow job does not idle the others. Results come back in job
order whatever order the jobs finish in. Helpers send (documents, tokens,
bytes) increments through a queue so the progress bar moves during long
shards, not only when a shard ends; the parent forwards them whenever it
reports its own progress and while it waits for the helpers' last jobs.
"""
import multiprocessing as mp
import pickle
import queue as queue_module
import traceback

from .preprocess_shard import process_shard

POLL_S = 0.1


class WorkerTraceback(Exception):
    """The traceback of an exception raised in a helper process (its cause, when re-raised)."""


def _helper(process, jobs, next_job, results, progress):
    """A helper process: take jobs until none is left; (index, result, None) or
    (index, exception, traceback text) for each, on `results`."""
    def report(docs, tokens, nbytes):
        progress.put((docs, tokens, nbytes))

    while True:
        index = _take(next_job, len(jobs))
        if index is None:
            return
        try:
            results.put((index, process(jobs[index], progress=report), None))
        except BaseException as e:  # reported to the parent, which raises it
            try:
                pickle.dumps(e)
            except Exception:  # an exception that cannot travel: its text does
                e = RuntimeError(f"{type(e).__name__}: {e}")
            results.put((index, e, traceback.format_exc()))
            return


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


class _Collector:
    """The parent's side: helpers' progress and results, and their failures."""

    def __init__(self, ctx, on_progress):
        self.on_progress = on_progress
        self.progress = ctx.Queue()
        self.results = ctx.Queue()
        self.done = {}
        self.processes = []

    def drain(self, timeout=0.0):
        """Forward queued progress; collect finished results; raise a helper's failure."""
        while True:
            try:
                self.on_progress(*self.progress.get_nowait())
            except queue_module.Empty:
                break
        while True:
            try:
                index, value, trace = self.results.get(timeout=timeout)
            except queue_module.Empty:
                break
            timeout = 0.0
            if trace is not None:
                raise value from WorkerTraceback(trace)
            self.done[index] = value
        for p in self.processes:
            if p.exitcode not in (None, 0):
                # Killed (out of memory?): the job it had taken is lost.
                raise RuntimeError(f"a preprocessing worker exited with code {p.exitcode}")

    def wait(self, count):
        """Until `count` results are in and every helper has ended."""
        while len(self.done) < count:
            ended = all(p.exitcode is not None for p in self.processes)
            self.drain(timeout=POLL_S)
            if ended and len(self.done) < count:  # everything they sent is read by now
                raise RuntimeError("preprocessing workers ended with jobs unreported")
        while any(p.is_alive() for p in self.processes):
            self.drain(timeout=POLL_S)  # a helper exits once its queued items are read
        self.drain()


def run_jobs(jobs, workers: int, on_progress, process=process_shard):
    """`process(job, progress=...)` for all jobs (a module-level function: helpers
    import it); returns the results in job order."""
    if workers <= 1 or len(jobs) <= 1:
        return [process(job, progress=on_progress) for job in jobs]
    ctx = _context()
    next_job = ctx.Value("l", 0)
    collector = _Collector(ctx, on_progress)
    try:
        for _ in range(min(workers, len(jobs)) - 1):
            p = ctx.Process(target=_helper, args=(process, jobs, next_job, collector.results, collector.progress),
                            daemon=True)
            p.start()
            collector.processes.append(p)

        def report(docs, tokens, nbytes):
            on_progress(docs, tokens, nbytes)
            collector.drain()

        while True:
            index = _take(next_job, len(jobs))
            if index is None:
                break
            collector.done[index] = process(jobs[index], progress=report)
            collector.drain()
        collector.wait(len(jobs))
        return [collector.done[i] for i in range(len(jobs))]
    finally:
        with next_job.get_lock():
            next_job.value = len(jobs)  # a failure: helpers take no further job
        for p in collector.processes:
            if p.is_alive():
                p.terminate()
            p.join()
