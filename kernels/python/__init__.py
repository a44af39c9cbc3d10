"""Fused kernels of ALUM, installed as ``alum.kernels``.

* ``adv_project``: the perturbation update (docs/algorithm.md, "Update rules"), a CUDA
  kernel (csrc/) registered as the custom op ``alum::adv_project``; the PyTorch reference
  ``alum.adv_project`` runs wherever the kernel is absent.
* ``fused_symmetric_kl``: ALUM's final symmetric KL over large vocabularies in Triton,
  forward and backward without materialising a softmax; ``vocab_parallel_symmetric_kl``
  for a vocabulary split across tensor-parallel ranks.

``python -m alum.kernels --check`` (console script ``alum-kernels``) reports which path
is active and why. See docs/kernels.md.

The Python side lives in kernels/python/ and the CUDA sources in kernels/csrc/, with no
``__init__.py`` in kernels/ itself: from the repository root, ``kernels`` is then no
package of ours, and ``import kernels`` finds Hugging Face's ``kernels`` (which
transformers imports) wherever it is installed.
"""
from .adv_project_dispatch import adv_project
from .extension import extension_state
from .fallback import KernelFallbackWarning
from .status import op_statuses, report
from .sym_kl import fused_symmetric_kl
from .sym_kl_vocab_parallel import vocab_parallel_symmetric_kl

__all__ = [
    "adv_project", "fused_symmetric_kl",
    "vocab_parallel_symmetric_kl", "extension_state", "op_statuses", "report",
    "KernelFallbackWarning",
]
