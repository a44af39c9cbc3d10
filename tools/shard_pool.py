"""Running shard jobs over --workers processes, with progress from inside shards.

Results come back in job order whatever order the workers finish in. Workers
send (documents, tokens, bytes) increments through a queue so the progress
bar moves during long shards, not only when a shard ends.
"""
import multiprocessing as mp
import queue as queue_module

from .preprocess_shard import process_shard

_QUEUE = None


def _init_worker(progress_queue):
    global _QUEUE
    _QUEUE = progress_queue


def _report(docs, tokens, nbytes):
    _QUEUE.put((docs, tokens, nbytes))


def _run_in_worker(job):
    return process_shard(job, progress=_report)


def _context():
    # forkserver: workers are forked from a fresh single-threaded server, not from
    # this process. A fork of this process deadlocks when it already ran threads
    # that hold locks at the fork (the Rust tokenizer's pool, torch's intra-op
    # threads): a library call after other tokenizing, or the test suite, hung
    # in the workers' first encode_batch. Workers import only numpy and the
    # tokenizers library, so the server's start costs little.
    methods = mp.get_all_start_methods()
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def run_jobs(jobs, workers: int, on_progress):
    """Process all jobs; returns their ShardResults in job order."""
    if workers <= 1 or len(jobs) <= 1:
        return [process_shard(job, progress=on_progress) for job in jobs]
    ctx = _context()
    progress_queue = ctx.Queue()
    pool = ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(progress_queue,))
    try:
        pending = [pool.apply_async(_run_in_worker, (job,)) for job in jobs]
        while True:
            try:
                on_progress(*progress_queue.get(timeout=0.1))
                continue
            except queue_module.Empty:
                pass
            failed = [p for p in pending if p.ready() and not p.successful()]
            if failed:
                failed[0].get()  # re-raises the worker's exception here
            if all(p.ready() for p in pending):
                break
        while True:
            try:
                on_progress(*progress_queue.get_nowait())
            except queue_module.Empty:
                break
        results = [p.get() for p in pending]
        pool.close()
        return results
    finally:
        pool.terminate()
        pool.join()
