"""What verifying a checkpoint costs: throughput of the candidate checksums on this machine.

Checkpoint completeness markers (alum.checkpoint_tags) record a checksum of every file,
computed at save time and checked at resume. This script times the candidates over an
in-memory buffer (the hash alone) and over a file read back from disk (what a resume
pays: reading plus hashing; the page cache may hold the file, as it does right after a
save), and prints MB/s and seconds per GB.

    python benchmarks/checksum_cost.py [--mb 256] [--repeats 3]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
import zlib
from typing import Callable, Dict

from alum.checkpoint_tags import file_checksum

CHUNK = 8 << 20


def _candidates() -> Dict[str, Callable[[bytes, object], object]]:
    out = {
        "zlib.crc32": lambda b, s: zlib.crc32(b, s or 0),
        "zlib.adler32": lambda b, s: zlib.adler32(b, 1 if s is None else s),
        "blake2b": None,
        "sha256": None,
    }
    try:
        import xxhash  # noqa: F401  (optional: timed only where it is installed)
        out["xxh3_64"] = None
    except ImportError:
        pass
    return out


def _time_buffer(name: str, data: memoryview, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        if name in ("zlib.crc32", "zlib.adler32"):
            fn = zlib.crc32 if name == "zlib.crc32" else zlib.adler32
            state = 0 if name == "zlib.crc32" else 1
            for i in range(0, len(data), CHUNK):
                state = fn(data[i:i + CHUNK], state)
        else:
            if name == "xxh3_64":
                import xxhash
                h = xxhash.xxh3_64()
            else:
                h = hashlib.new(name)
            for i in range(0, len(data), CHUNK):
                h.update(data[i:i + CHUNK])
            h.digest()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=256, help="buffer and file size in MB (default 256)")
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    args = p.parse_args()
    size = args.mb << 20
    data = memoryview(os.urandom(size))
    print(f"{args.mb} MB of random bytes, best of {args.repeats}")
    print(f"{'checksum':<28} {'MB/s':>10} {'s per GB':>10}")
    for name in _candidates():
        dt = _time_buffer(name, data, args.repeats)
        print(f"{name + ' (in memory)':<28} {size / 1e6 / dt:>10.0f} {dt * (1 << 30) / size:>10.3f}")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "blob.bin")
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            file_checksum(path)
            best = min(best, time.perf_counter() - t0)
        print(f"{'file_checksum (file, read)':<28} {size / 1e6 / best:>10.0f} "
              f"{best * (1 << 30) / size:>10.3f}")


if __name__ == "__main__":
    main()
