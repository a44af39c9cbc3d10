"""Command-line options for every AlumConfig field, shared by the training entry points.

Each ``AlumConfig`` field becomes ``--adv-<field>`` with the field's docstring as its
help, so ``--help`` always documents every ALUM option and cannot drift from the
dataclass.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
from typing import Dict, Optional

from .config import PRESETS, AlumConfig


def field_docs(cls: type) -> Dict[str, str]:
    """The docstring under each field of a dataclass (attribute docstrings, via ast)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs: Dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) \
                and isinstance(nxt.value.value, str):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def parse_bool(text: str) -> bool:
    """argparse type for true/false options (1/0, yes/no, on/off)."""
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_alum_arguments(parser: argparse.ArgumentParser, default_preset: str) -> None:
    """Adds ``--alum/--no-alum``, ``--alum-preset`` and one ``--adv-*`` option per field."""
    group = parser.add_argument_group(
        "ALUM (adversarial training in the embedding space; see docs/alum_options.md)")
    group.add_argument("--alum", dest="alum", action="store_true", default=True,
                       help="train with ALUM's adversarial term (default)")
    group.add_argument("--no-alum", dest="alum", action="store_false",
                       help="train the standard objective only")
    group.add_argument("--alum-preset", default=default_preset, choices=sorted(PRESETS),
                       help=f"starting values of the --adv-* options (default: "
                            f"{default_preset}); any --adv-* option overrides its field")
    docs = field_docs(AlumConfig)
    for f in dataclasses.fields(AlumConfig):
        # Annotations are strings here (from __future__ import annotations in config.py).
        kind = {"bool": parse_bool, "int": int, "float": float, "str": str}[str(f.type)]
        extra = {}
        choices = {"norm": ("inf", "l2", "l1"), "level": ("token", "sequence"),
                   "update": ("project", "normalize"), "loss": ("sym_kl", "kl", "mse"),
                   "epsilon_scale": ("absolute", "relative")}.get(f.name)
        if choices:
            extra["choices"] = choices
        group.add_argument(f"--adv-{f.name.replace('_', '-')}", dest=f"adv_{f.name}",
                           type=kind, default=None, metavar=f.name.upper() if not choices
                           else None, help=f"{docs.get(f.name, '')} (default: from the preset, "
                           f"else {f.default!r})", **extra)


def alum_config_from_args(args: argparse.Namespace,
                          **forced: object) -> Optional[AlumConfig]:
    """The AlumConfig the options describe (None with --no-alum); ``forced`` fields win
    only where the user gave no --adv-* value."""
    if not args.alum:
        return None
    values = dict(PRESETS[args.alum_preset])
    values.update(forced)
    for f in dataclasses.fields(AlumConfig):
        given = getattr(args, f"adv_{f.name}", None)
        if given is not None:
            values[f.name] = given
    return AlumConfig(**values)
