"""The private internals of megatron-core and DeepSpeed that alum patches: each is checked
before use, a changed one stops with a line naming the installed version, and each patch
has a test showing it is still needed (the ``*_still_*`` tests below: when one of them
fails after an upgrade, the patch it names can go; docs/upgrading.md)."""
import importlib
import importlib.metadata
import inspect
import os
import re
import subprocess
import sys
import types

import pytest
import torch

from alum.parallel import internals
from alum.parallel.internals import (INTERNALS, TORCH_GLOBAL_MODULES, Internal,
                                     InternalChanged, require, require_instance_attrs)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="the patches are CPU-only")


def _run_without_cuda(code: str) -> subprocess.CompletedProcess:
    """``python -c code`` in a fresh process that sees no CUDA device; it must exit 0."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_every_listed_internal_is_as_expected_in_the_installed_versions():
    bad = [error for _, error in internals.check_all() if error is not None]
    assert not bad, "\n".join(bad)
    # Each entry names the test or benchmark that shows its patch is still needed, and
    # a named test file exists.
    for entry in INTERNALS:
        assert entry.needed_by and entry.use, entry
        path = entry.needed_by.split("::")[0].split(" ")[0]
        assert os.path.isfile(os.path.join(REPO, path)), (entry.qualname, path)


def test_a_missing_internal_names_the_distribution_version_and_internal():
    fake = types.ModuleType("megatron.core.tensor_parallel.random")
    entry = internals.internal("megatron.core.tensor_parallel.random", "_get_cuda_rng_state")
    with pytest.raises(InternalChanged) as err:
        require(entry, fake)
    version = importlib.metadata.version("megatron-core")
    message = str(err.value)
    assert message.startswith(f"megatron-core {version}: "
                              "megatron.core.tensor_parallel.random._get_cuda_rng_state is gone")
    assert "docs/upgrading.md" in message and "\n" not in message


def test_a_changed_signature_is_refused():
    fake = types.ModuleType("megatron.core.tensor_parallel.random")
    fake._set_cuda_rng_state = lambda new_state, device=-1: None  # graph_safe dropped
    entry = internals.internal("megatron.core.tensor_parallel.random", "_set_cuda_rng_state")
    with pytest.raises(InternalChanged, match=r"has parameters \(new_state, device\), expected "
                                              r"them to start with \(new_state, device, "
                                              r"graph_safe\)"):
        require(entry, fake)
    fake._set_cuda_rng_state = 3
    with pytest.raises(InternalChanged, match="is no longer callable"):
        require(entry, fake)
    # The expected shape passes and gives the value itself.
    fake._set_cuda_rng_state = lambda new_state, device=-1, graph_safe=False: "ok"
    assert require(entry, fake)(None) == "ok"


def test_a_missing_attribute_of_a_live_object_names_its_class():
    class DeepSpeedZeroOptimizer_Stage3:
        micro_step_id = 0

    with pytest.raises(InternalChanged) as err:
        require_instance_attrs(DeepSpeedZeroOptimizer_Stage3(), "deepspeed",
                               ("micro_step_id", "grad_partitions_flat_buffer"), use="zeroes it")
    version = importlib.metadata.version("deepspeed")
    assert f"deepspeed {version}: " in str(err.value)
    assert "DeepSpeedZeroOptimizer_Stage3.grad_partitions_flat_buffer is gone" in str(err.value)


@pytest.mark.slow
def test_a_changed_megatron_internal_stops_cpu_compat_before_any_patch():
    """In a fresh process (cpu_compat patches once per process): megatron's
    ``_set_cuda_rng_state`` replaced by one of another shape; apply_cpu_compat refuses with
    the version and leaves every module's torch global as it was."""
    code = (
        "import torch, megatron.core.utils as u, megatron.core.tensor_parallel.random as r\n"
        "r._set_cuda_rng_state = lambda state: None\n"
        "from alum.parallel import cpu_compat\n"
        "from alum.parallel.internals import InternalChanged\n"
        "try:\n"
        "    cpu_compat.apply_cpu_compat()\n"
        "except InternalChanged as err:\n"
        "    print('refused:', err)\n"
        "assert u.torch is torch and not cpu_compat.is_applied()\n")
    out = _run_without_cuda(code)
    version = importlib.metadata.version("megatron-core")
    assert (f"refused: megatron-core {version}: megatron.core.tensor_parallel.random."
            f"_set_cuda_rng_state has parameters (state)") in out.stdout


@cpu_only
def test_a_changed_deepspeed_internal_stops_the_shm_patch(monkeypatch):
    from alum.parallel.deepspeed_compat import skip_shm_comm_build

    module = importlib.import_module("deepspeed.comm.torch")
    monkeypatch.delattr(module, "build_shm_op")
    version = importlib.metadata.version("deepspeed")
    with pytest.raises(InternalChanged,
                       match=rf"^deepspeed {re.escape(version)}: "
                             r"deepspeed\.comm\.torch\.build_shm_op is gone"):
        skip_shm_comm_build()


# -- the patches are still needed -----------------------------------------------------
CUDA_DEVICE_REQUESTS = (r"torch\.cuda\.current_device\(\)", r"device=\"cuda\"",
                        r"torch\.cuda\.synchronize\(", r"\.cuda\(\)")


@pytest.mark.parametrize("name", TORCH_GLOBAL_MODULES)
def test_each_proxied_module_still_asks_cuda_for_a_device(name):
    """cpu_compat rebinds this module's torch global (and replaces broadcast_data, which
    calls tensor.cuda()): needed while its source still asks CUDA for a device."""
    source = inspect.getsource(importlib.import_module(name))
    found = {p: len(re.findall(p, source)) for p in CUDA_DEVICE_REQUESTS}
    assert any(found.values()), (
        f"megatron-core {importlib.metadata.version('megatron-core')}: {name} no longer asks "
        f"CUDA for a device; remove it from cpu_compat (docs/upgrading.md)")
    if name == "megatron.core.tensor_parallel.data":
        # megatron's own broadcast_data, from the module's file (the attribute is
        # cpu_compat's replacement once a test in this process applied it).
        body = re.search(r"\ndef broadcast_data\(.*?(?=\ndef |\Z)", source, re.S)
        assert body and ".cuda()" in body.group(0), \
            "broadcast_data no longer calls .cuda(): drop its replacement in cpu_compat"


@pytest.mark.slow
@cpu_only
def test_megatron_still_needs_the_cpu_compat():
    """Without the patches, on a machine without CUDA, megatron's buffers and its RNG
    tracker fail: what cpu_compat exists for."""
    code = (
        "import torch\n"
        "from megatron.core import tensor_parallel\n"
        "from megatron.core.utils import GlobalMemoryBuffer\n"
        "failed = []\n"
        "try:\n"
        "    GlobalMemoryBuffer().get_tensor((2,), torch.float32, 'x')\n"
        "except Exception as err:\n"
        "    failed.append('buffer')\n"
        "try:\n"
        "    tensor_parallel.model_parallel_cuda_manual_seed(1, tp_rank=0, ep_rank=0, etp_rank=0)\n"
        "    with tensor_parallel.get_cuda_rng_tracker().fork():\n"
        "        torch.rand(2)\n"
        "except Exception as err:\n"
        "    failed.append('rng')\n"
        "print(' '.join(failed))\n")
    out = _run_without_cuda(code)
    assert out.stdout.split() == ["buffer", "rng"], out.stdout


@cpu_only
def test_deepspeed_would_still_build_its_shm_op_on_cpu():
    """Without the patch, ``init_distributed`` on CPU calls build_shm_op, which compiles
    DeepSpeed's shared-memory op just in time (40-85 s on the 2-core development VM)
    whenever the CPU accelerator offers it and the wheel holds no prebuilt one."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator
    from deepspeed.git_version_info import installed_ops

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    assert builder is not None, "the CPU accelerator has no shm op: the patch can go"
    assert deepspeed.ops.__compatible_ops__.get(builder.NAME, False)
    assert not installed_ops.get(builder.NAME, False), "a prebuilt shm op: the patch can go"
    # The module's file, not its build_shm_op attribute (patched once a test ran DeepSpeed).
    source = inspect.getsource(importlib.import_module("deepspeed.comm.torch"))
    assert re.search(r"def build_shm_op\(\):(\n .*)*builder\.load\(\)", source)


def test_deepspeed_still_refuses_another_dp_size_natively():
    """Why alum.pretrain.reshard converts to a universal checkpoint: the engine's own load
    of a ZeRO-1/2 checkpoint refuses another data-parallel size."""
    source = inspect.getsource(importlib.import_module("deepspeed.runtime.engine"))
    # The message is split over source lines: its words, in order, across the quotes and
    # line continuations.
    words = "Automatic adjustment of ZeRO's optimizer state partitioning with a new world size"
    assert re.search(r"[\s\"\\]+".join(map(re.escape, words.split())), source)


def test_the_upgrade_doc_lists_every_internal():
    with open(os.path.join(REPO, "docs", "upgrading.md"), encoding="utf-8") as f:
        doc = f.read()
    missing = [e.qualname for e in INTERNALS if e.qualname not in doc
               and not (e.name == "torch" and e.module in doc)]
    assert not missing, f"docs/upgrading.md does not mention {missing}"


def test_the_listed_internals_are_unique():
    names = [e.qualname for e in INTERNALS]
    assert len(names) == len(set(names))
    assert all(isinstance(e, Internal) for e in INTERNALS)
