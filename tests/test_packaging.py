"""The installed distribution: one import namespace, console scripts, no stray top-level names."""
import importlib.metadata
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--no-build-isolation", "--no-compile", "--target", str(target),
                           REPO], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    code = (
        "import os, alum, alum.finetune.cli, alum.tools.preprocess, alum.pretrain.cli;"
        "from alum.pretrain.ds_config import ds_config_dir, shipped_ds_configs;"
        "from alum.data.sample import sample_corpus_path;"
        "assert alum.__file__.startswith(os.environ['TARGET']), alum.__file__;"
        "assert os.path.isfile(os.path.join(ds_config_dir(), 'zero1.json')), ds_config_dir();"
        "assert 'zero3' in shipped_ds_configs();"
        "assert os.path.isdir(sample_corpus_path('wiki'));"
        "import alum.kernels.extension as ext;"
        "assert ext.CSRC.startswith(os.environ['TARGET']), ext.CSRC;"
        "assert sorted(os.listdir(ext.CSRC)) == sorted(os.listdir(os.environ['REPO_CSRC']));"
        "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(target),
                                         "TARGET": str(target),
                                         "REPO_CSRC": os.path.join(REPO, "kernels", "csrc")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_the_kernels_folder_is_no_top_level_package():
    """kernels/ holds the CUDA sources (csrc/) and the Python side (python/, installed as
    alum.kernels), and no __init__.py itself: a top-level package ``kernels`` of ours would
    shadow Hugging Face's, which transformers imports."""
    assert not os.path.exists(os.path.join(REPO, "kernels", "__init__.py"))
    assert os.path.isfile(os.path.join(REPO, "kernels", "python", "__init__.py"))
    assert os.path.isfile(os.path.join(REPO, "kernels", "csrc", "adv_project_kernel.cu"))


@pytest.mark.slow
def test_from_the_repository_root_an_installed_kernels_package_wins(tmp_path):
    """Run from the root (the root first on sys.path, as pytest and scripts have it) with a
    stand-in for Hugging Face's ``kernels`` installed after it: ``import kernels`` gives the
    installed one, ``import alum.kernels`` gives ours, with its CUDA sources."""
    site = tmp_path / "site"
    (site / "kernels").mkdir(parents=True)
    (site / "kernels" / "__init__.py").write_text("__version__ = '0.0.stand-in'\n")
    code = ("import os, kernels, alum.kernels, alum.kernels.extension as ext;"
            "assert kernels.__version__ == '0.0.stand-in', kernels;"
            "assert alum.kernels.__file__.startswith(os.path.join(os.getcwd(), 'kernels')),"
            " alum.kernels.__file__;"
            "assert os.path.isfile(os.path.join(ext.CSRC, 'adv_project_kernel.cu')), ext.CSRC;"
            "alum.kernels.adv_project; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_hugging_face_kernels_is_what_this_process_imports():
    """Under pytest the root is on sys.path: wherever Hugging Face's ``kernels`` is
    installed (transformers 5.25 and later require it), ``kernels`` is that distribution's
    package; elsewhere ``kernels`` names no module with code of ours."""
    import importlib.util

    spec = importlib.util.find_spec("kernels")
    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        # At most the namespace portion that the bare kernels/ folder is: no code.
        assert spec is None or spec.origin in (None, "namespace"), spec
        return
    assert spec is not None and spec.origin is not None, spec
    installed = importlib.metadata.distribution("kernels").locate_file("kernels/__init__.py")
    assert os.path.realpath(spec.origin) == os.path.realpath(str(installed)), spec
