"""The job pool of alum-preprocess (tools/shard_pool.py) on CPU-bound dummy jobs: its
wall time against the ideal, (summed job CPU time) / workers.

    python benchmarks/shard_pool_overhead.py [--jobs 16] [--job-s 0.05] [--repeat 7]

Each job spins for --job-s seconds of its own CPU time and reports progress 5 times, like
a shard piece; the jobs go through ``run_jobs`` with 1 and 2 workers. The overhead
(wall - ideal) is what the pool costs: starting the helpers (a forkserver, the imports of
tools/preprocess_shard.py), handing out jobs and collecting results. The minimum over
--repeat runs is the figure to compare (a shared machine only ever adds time). Whichever
``alum`` the interpreter imports is measured, so two checkouts compare with two
interpreters.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def spin_job(job, progress=None):
    """``job`` = (index, CPU seconds): spins, reporting progress 5 times."""
    index, seconds = job
    start = time.process_time()
    for k in range(5):
        while time.process_time() - start < seconds * (k + 1) / 5:
            pass
        if progress is not None:
            progress(1, 1, 1)
    return index, os.getpid()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=16, help="jobs per run (default: 16)")
    p.add_argument("--job-s", type=float, default=0.05,
                   help="CPU seconds per job (default: 0.05)")
    p.add_argument("--repeat", type=int, default=7, help="runs per worker count (default: 7)")
    args = p.parse_args(argv)
    from alum.tools import shard_pool
    from shard_pool_overhead import spin_job as job  # importable by the helpers

    print(f"{shard_pool.__file__}, {args.jobs} jobs of {args.job_s} CPU s, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print("| workers | ideal s | wall s (min) | wall s (median) | overhead s (min) |")
    print("|---|---|---|---|---|")
    for workers in (1, 2):
        walls = []
        for _ in range(args.repeat):
            seen = []
            started = time.perf_counter()
            out = shard_pool.run_jobs([(i, args.job_s) for i in range(args.jobs)], workers,
                                      lambda *inc: seen.append(inc), process=job)
            walls.append(time.perf_counter() - started)
            assert [i for i, _ in out] == list(range(args.jobs)) and len(seen) == 5 * args.jobs
        ideal = args.jobs * args.job_s / workers
        print(f"| {workers} | {ideal:.2f} | {min(walls):.3f} | {statistics.median(walls):.3f} | "
              f"{min(walls) - ideal:+.3f} |")


if __name__ == "__main__":
    main()
