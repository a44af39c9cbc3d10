"""Child processes of the tests (``deepspeed`` launches, CLIs, benchmark scripts).

A process group that an earlier in-process test initialised leaves its rendezvous
variables in ``os.environ``, with its store still listening on ``MASTER_PORT``: a child
that inherits them tries to listen there too (EADDRINUSE) or joins the wrong world. So
every child gets an environment without them, and each launch names its own port.
"""
import os
import subprocess
from typing import Dict, List, Optional

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


def start_nodes(script: str, *args: object, hostfile: str, nodes: int, port: int,
                cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None,
                log_dir: Optional[str] = None) -> List[subprocess.Popen]:
    """One ``deepspeed --hostfile H --no_ssh --node_rank N`` launcher per node of ``hostfile``,
    all on this machine, meeting at 127.0.0.1:``port`` (what each node of a cluster runs
    without ssh). Each launcher's output goes to ``<log_dir>/node<N>.log`` when given."""
    procs = []
    for node in range(nodes):
        out = open(os.path.join(log_dir, f"node{node}.log"), "w") if log_dir else subprocess.DEVNULL
        procs.append(subprocess.Popen(
            ["deepspeed", "--hostfile", hostfile, "--no_ssh", "--node_rank", str(node),
             "--master_addr", "127.0.0.1", "--master_port", str(port), script,
             *map(str, args)], env=env or child_env(), cwd=cwd, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def node_logs(log_dir: str, nodes: int) -> str:
    """The end of every node's launcher log (for failure messages)."""
    tails = []
    for node in range(nodes):
        with open(os.path.join(log_dir, f"node{node}.log")) as f:
            tails.append(f"--- node {node} ---\n" + f.read()[-3000:])
    return "\n".join(tails)


def launch_nodes(script: str, *args: object, hostfile: str, nodes: int, port: int,
                 log_dir: str, timeout: int = 600) -> List[int]:
    """``start_nodes`` and wait; asserts that every launcher succeeded."""
    procs = start_nodes(script, *args, hostfile=hostfile, nodes=nodes, port=port,
                        log_dir=log_dir)
    codes = [p.wait(timeout=timeout) for p in procs]
    assert codes == [0] * nodes, node_logs(log_dir, nodes)
    return codes
