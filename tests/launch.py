"""Child processes of the tests (``deepspeed`` launches, CLIs, benchmark scripts).

A process group that an earlier in-process test initialised leaves its rendezvous
variables in ``os.environ``, with its store still listening on ``MASTER_PORT``: a child
that inherits them tries to listen there too (EADDRINUSE) or joins the wrong world. So
every child gets an environment without them, and each launch names its own port.
"""
import os
import subprocess
from typing import Dict, Optional

RENDEZVOUS_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def child_env(**extra: str) -> Dict[str, str]:
    """``os.environ`` without the rendezvous variables, one CPU thread, Python warnings
    off (children's logs stay readable in a failure message), then ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in RENDEZVOUS_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.update(extra)
    return env


def launch_deepspeed(script: str, *args: object, nprocs: int, port: int, timeout: int = 600,
                     cwd: Optional[str] = None) -> subprocess.CompletedProcess:
    """``deepspeed --num_gpus nprocs --master_port port script args`` (CPU ranks), asserting
    that it succeeded; the failure message carries the end of both output streams."""
    done = subprocess.run(["deepspeed", "--num_gpus", str(nprocs), "--master_port", str(port),
                           script, *map(str, args)], env=child_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done
