"""Fused kernels of ALUM, installed as ``alum.kernels``.

* ``adv_project``: the perturbation update (docs/algorithm.md, "Update rules"), a CUDA
  kernel (csrc/) registered as the custom op ``alum::adv_project``; the PyTorch reference
  ``alum.adv_project`` runs wherever the kernel is absent.
* ``fused_symmetric_kl``: ALUM's final symmetric KL over large vocabularies in Triton,
  forward and backward without materialising a softmax; ``vocab_parallel_symmetric_kl``
  for a vocabulary split across tensor-parallel ranks.

``python -m alum.kernels --check`` (console script ``alum-kernels``) reports which path
is active and why. See docs/kernels.md.
"""
if __name__ == "alum.kernels":
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
# Otherwise this folder was found as a top-level ``kernels`` because the repository root is
# on sys.path (pytest's rootdir, ``python -c`` run there). transformers probes for Hugging
# Face's own ``kernels`` package by importing that name; the folder must then stay inert:
# no op registration (alum.kernels would register alum::adv_project a second time) and no
# __version__, so transformers concludes that no usable ``kernels`` package is installed.
