"""Test-wide settings: one CPU thread (fast, deterministic on 2-core CI) and no hub access."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")



def _import_hf_kernels_before_the_repository_folder() -> None:
    """pytest puts the repository root on sys.path, where kernels/ (alum.kernels once
    installed) is importable as a top-level `kernels`. Where Hugging Face's `kernels`
    distribution is installed (transformers 5.25 requires it), transformers imports it
    eagerly and would get our folder: import the real one first, without the root."""
    import importlib.metadata
    import sys

    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    try:
        import kernels  # noqa: F401  (Hugging Face's; sys.modules keeps it)
    finally:
        sys.path[:] = saved


_import_hf_kernels_before_the_repository_folder()

import torch  # noqa: E402

torch.set_num_threads(1)
