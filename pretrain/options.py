"""Command-line options generated from the config dataclasses (one option per field).

Each field ``some_name`` of a section becomes ``--some-name`` with the field's
docstring as its help, so ``--help`` documents every option and cannot drift
from alum.pretrain.config. Types come from the (string) annotations.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Dict, Type

from alum.cli_args import field_docs, parse_bool

from .config import ALUM_POSITIONS, LR_DECAYS, MODEL_KINDS, PACKINGS, PRECISIONS, TORCH_ADAM

CHOICES = {"precision": PRECISIONS, "lr_decay": LR_DECAYS, "model_kind": MODEL_KINDS,
           "packing": PACKINGS, "torch_adam": TORCH_ADAM, "family": ("bert", "roberta"),
           "model_size": ("tiny", "small", "base", "large"), "alum_positions": ALUM_POSITIONS}


_TYPES = {"int": int, "float": float, "str": str, "bool": parse_bool}


def _parse_type(annotation: str):
    """(converter, nargs) for the annotations the configs use."""
    text = annotation.replace(" ", "")
    if text.startswith("Optional[") and text.endswith("]"):
        text = text[len("Optional["):-1]
    if text.startswith("Tuple[") and text.endswith(",...]"):
        return _TYPES[text[len("Tuple["):-len(",...]")]], "*"
    return _TYPES[text], None


def add_section(parser: argparse.ArgumentParser, cls: Type, title: str,
                defaults: Dict[str, Any] = None, skip: tuple = ()) -> None:
    """One ``--field`` per dataclass field (minus ``skip``); ``defaults`` override shown values."""
    group = parser.add_argument_group(title)
    docs = field_docs(cls)
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind, nargs = _parse_type(str(f.type))
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING
                               else f.default_factory())
        extra: Dict[str, Any] = {}
        if nargs:
            extra["nargs"] = nargs
        if f.name in CHOICES:
            extra["choices"] = CHOICES[f.name]
        if kind is parse_bool:
            extra["metavar"] = "BOOL"
        shown = " ".join(default) if isinstance(default, tuple) else default
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind,
                           default=default, help=f"{docs.get(f.name, '')} (default: {shown})",
                           **extra)


def section_values(args: argparse.Namespace, cls: Type, skip: tuple = ()) -> Dict[str, Any]:
    """The parsed values of ``cls``'s fields."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if f.name not in skip}
