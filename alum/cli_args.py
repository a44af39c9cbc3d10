"""Command-line options generated from the typed config dataclasses, one per field.

Each field ``some_name`` becomes ``--<prefix>some-name`` with the field's docstring as its
help and its type from the (string) annotation, so ``--help`` documents every option
and cannot drift from the dataclass. The training entry points use it for
``AlumConfig`` (``--adv-<field>``, ``add_alum_arguments``) and for the pre-training
sections (``add_section``).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Type

from .config import DIRECTIONS, EPSILON_SCALES, LEVELS, LOSSES, NORMS, PRESETS, UPDATES, AlumConfig


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


_TYPES: Dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str,
                                            "bool": parse_bool}


def option_type(annotation: str) -> Tuple[Callable[[str], Any], Optional[str]]:
    """(converter, nargs) for the annotations the configs use: int, float, str, bool,
    ``Optional[...]`` of one of them, ``Tuple[..., ...]`` (several values)."""
    text = annotation.replace(" ", "")
    if text.startswith("Optional[") and text.endswith("]"):
        text = text[len("Optional["):-1]
    if text.startswith("Tuple[") and text.endswith(",...]"):
        return _TYPES[text[len("Tuple["):-len(",...]")]], "*"
    return _TYPES[text], None


def add_field_options(group, cls: Type, *, prefix: str = "",
                      defaults: Optional[Mapping[str, Any]] = None, skip: tuple = (),
                      choices: Optional[Mapping[str, tuple]] = None,
                      preset: bool = False) -> None:
    """One ``--<prefix><field>`` option per field of the dataclass ``cls`` (minus ``skip``),
    stored as ``<prefix_><field>``.

    ``defaults`` override the fields' defaults. ``preset``: the options default to None
    (a preset fills the fields the user does not give) and the help says so.
    """
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind, nargs = option_type(str(f.type))
        own = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        extra: Dict[str, Any] = {"nargs": nargs} if nargs else {}
        if f.name in (choices or {}):
            extra["choices"] = choices[f.name]
        if preset:
            default, shown = None, f"from the preset, else {own!r}"
            if "choices" not in extra:
                extra["metavar"] = f.name.upper()
        else:
            default = (defaults or {}).get(f.name, own)
            shown = " ".join(default) if isinstance(default, tuple) else default
            if kind is parse_bool:
                extra["metavar"] = "BOOL"
        group.add_argument(f"--{prefix}{f.name.replace('_', '-')}",
                           dest=prefix.replace("-", "_") + f.name, type=kind, default=default,
                           help=f"{docs.get(f.name, '')} (default: {shown})", **extra)


def add_section(parser: argparse.ArgumentParser, cls: Type, title: str,
                defaults: Optional[Mapping[str, Any]] = None, skip: tuple = (),
                choices: Optional[Mapping[str, tuple]] = None) -> None:
    """An argument group ``title`` with one ``--field`` per field of ``cls``."""
    add_field_options(parser.add_argument_group(title), cls, defaults=defaults, skip=skip,
                      choices=choices)


def section_values(args: argparse.Namespace, cls: Type, skip: tuple = ()) -> Dict[str, Any]:
    """The parsed values of ``cls``'s fields."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if f.name not in skip}


ALUM_CHOICES = {"norm": NORMS, "level": LEVELS, "update": UPDATES, "loss": LOSSES,
                "epsilon_scale": EPSILON_SCALES, "direction": DIRECTIONS}


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
    add_field_options(group, AlumConfig, prefix="adv-", choices=ALUM_CHOICES, preset=True)


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
    if getattr(args, "adv_steps", None) is not None and values["direction"] != "ascent":
        # K counts ascent passes: a direction without them would ignore the option silently.
        raise ValueError(
            f"--adv-steps {args.adv_steps} is used only by --adv-direction ascent, and the "
            f"run's direction is {values['direction']!r} (--alum-preset {args.alum_preset}"
            f"{'' if getattr(args, 'adv_direction', None) is None else ', --adv-direction'}"
            "); add --adv-direction ascent or drop --adv-steps")
    return AlumConfig(**values)
