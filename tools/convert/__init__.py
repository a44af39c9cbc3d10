"""Checkpoint conversion (``alum-convert``, docs/convert.md): to and from Hugging Face, and
between tensor/pipeline-parallel layouts, through one versioned name map
(``alum.models.hf_state_dict``: our names <-> HF's, the transforms).

Modules: ``sharding`` (TP/PP split and merge), ``our_checkpoint`` (reading our
checkpoints, ZeRO 0-3), ``checkpoint_writer`` (writing them), ``hf_model`` (the
HF side), ``safetensors_stream``, ``staging`` (all-or-nothing destinations), and
the commands ``to_hf``, ``from_hf``, ``reshape``, ``cli``.
"""
from alum.models.hf_state_dict import NAME_MAP_VERSION

from .errors import ConvertError

__all__ = ["ConvertError", "NAME_MAP_VERSION"]
