"""``alum-kernels`` / ``python -m alum.kernels``: report which kernel paths are active.

    alum-kernels --check            build/load what can be, then print the paths and why
    alum-kernels --check --no-build report without compiling anything
    alum-kernels --check --strict   exit 1 unless the CUDA and Triton kernels are active
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from .status import format_report, report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alum-kernels",
        description="Report which implementation of ALUM's fused ops (adv_project, "
                    "fused_symmetric_kl) runs on this machine, and why.")
    parser.add_argument("--check", action="store_true",
                        help="load (building just in time if needed) and report (the default)")
    parser.add_argument("--no-build", action="store_true",
                        help="do not compile or load the CUDA extension; say what would happen")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 unless every op uses its kernel on CUDA tensors")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    rep = report(build=not args.no_build)
    print(json.dumps(rep, indent=2) if args.json else format_report(rep))
    if args.strict and any(op["cuda_path"] == "pytorch-reference" for op in rep["ops"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
