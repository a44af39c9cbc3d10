"""Checkpoint conversion (``alum-convert``, docs/convert.md): to and from Hugging Face, and
between tensor/pipeline-parallel layouts, through one versioned name map (``name_map``).

Modules: ``name_map`` (our names <-> HF's, the transforms), ``sharding`` (TP/PP
split and merge), ``our_checkpoint`` (reading our checkpoints, ZeRO 0-3),
``checkpoint_writer`` (writing them), ``hf_model`` (the HF side),
``safetensors_stream``, ``staging`` (all-or-nothing destinations), and the
commands ``to_hf``, ``from_hf``, ``reshape``, ``cli``.
"""
from .errors import ConvertError
from .name_map import NAME_MAP_VERSION

__all__ = ["ConvertError", "NAME_MAP_VERSION"]
