"""The installed distribution: one import namespace, console scripts, no stray top-level names."""
import importlib.metadata
import os
import subprocess
import sys

import pytest


def test_only_alum_is_a_top_level_import_name():
    dist = importlib.metadata.distribution("alum")
    assert dist.read_text("top_level.txt").split() == ["alum"]


def test_mapped_folders_import_under_alum_from_any_directory(tmp_path):
    code = ("import importlib.util, alum, alum.finetune.cli, alum.finetune.task_data;"
            "assert importlib.util.find_spec('tools') is None, 'tools installed';"
            "spec = importlib.util.find_spec('kernels');"
            "assert spec is None or 'alum' not in (spec.origin or ''), spec;"
            "alum.adversarial_loss; alum.adv_project; alum.AlumConfig; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.slow
def test_console_script_help_runs(tmp_path):
    scripts = [ep for ep in importlib.metadata.entry_points(group="console_scripts")
               if ep.value.startswith("alum.")]
    names = {ep.name for ep in scripts}
    assert {"alum-finetune", "alum-finetune-demo"} <= names
    out = subprocess.run(["alum-finetune", "--help"], cwd=tmp_path, capture_output=True,
                         text=True)
    assert out.returncode == 0 and "--adv-epsilon" in out.stdout


@pytest.mark.slow
def test_a_non_editable_install_has_every_package_and_its_data(tmp_path):
    """What a wheel installs: the mapped folders, the sample corpus, the DeepSpeed configs."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--no-build-isolation", "--no-compile", "--target", str(target),
                           repo], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    code = (
        "import os, alum, alum.finetune.cli, alum.tools.preprocess, alum.pretrain.cli;"
        "from alum.pretrain.ds_config import ds_config_dir, shipped_ds_configs;"
        "from alum.data.sample import sample_corpus_path;"
        "assert alum.__file__.startswith(os.environ['TARGET']), alum.__file__;"
        "assert os.path.isfile(os.path.join(ds_config_dir(), 'zero1.json')), ds_config_dir();"
        "assert 'zero3' in shipped_ds_configs();"
        "assert os.path.isdir(sample_corpus_path('wiki'));"
        "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(target),
                                         "TARGET": str(target)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_the_kernels_folder_stays_inert_when_found_as_a_top_level_package():
    """From the repository root, transformers' probe for Hugging Face's `kernels` package
    imports our kernels/ folder under that name: it must neither register alum's custom op
    (alum.kernels would then register it twice) nor pass for HF's package."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.path.insert(0, '');"
            "from transformers.utils.import_utils import is_kernels_available;"
            "assert not is_kernels_available();"
            "import kernels; assert not hasattr(kernels, 'adv_project');"
            "import alum.kernels; alum.kernels.adv_project; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
