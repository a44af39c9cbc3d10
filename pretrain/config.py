"""Typed configuration of a pre-training run (``alum-pretrain``).

One dataclass per concern; every field has one docstring (which is also its
``--help`` text, see ``alum.cli_args``) and is validated in
``__post_init__``: a bad value raises ``ValueError`` naming the field, and
invalid combinations are rejected when the config is built, not mid-run.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from alum.config import AlumConfig
from alum.config_base import bad_value as _bad, check_choice, check_int, check_number

from .ds_json import load_ds_config, precision_of, zero_stage

PRECISIONS = ("config", "fp32", "bf16", "fp16")
LR_DECAYS = ("linear", "cosine", "constant")
MODEL_KINDS = ("megatron", "hf")
ALUM_POSITIONS = ("masked", "all")
ALUM_ORDERS = ("auto", "fast", "lean")
PACKINGS = ("document", "cross_document")
TORCH_ADAM = ("auto", "true", "false")
FAMILIES = ("bert", "roberta")
MODEL_SIZES = ("tiny", "small", "base", "large")


@dataclass
class DataConfig:
    """Where the MLM samples come from (alum.data, docs/mlm_data.md)."""

    data_path: Tuple[str, ...] = ()
    """Indexed-dataset prefixes (``PREFIX.bin``/``.idx`` from alum-preprocess), or a
    weighted blend ``30 wiki 70 owt``. Empty: the shipped sample corpus, tokenized and
    indexed into ``cache_dir`` on first use."""

    tokenizer: Optional[str] = None
    """Tokenizer directory (``AutoTokenizer.from_pretrained``); required with
    ``data_path``. With the sample corpus: the one trained into ``cache_dir``."""

    cache_dir: Optional[str] = None
    """Where the sample corpus's tokenizer, indexed dataset and packed indices are
    cached (default: ``$XDG_CACHE_HOME/alum/pretrain_sample`` or ``~/.cache/...``)."""

    seq_length: int = 128
    """Tokens per sample, special tokens included."""

    split: Optional[str] = None
    """Train/valid/test weights over documents (megatron's format). Default: 949,50,1,
    or 90,10,0 for the sample corpus (82 documents)."""

    packing: str = "document"
    """``document``: one document per sample; ``cross_document``: fill across documents
    (RoBERTa FULL-SENTENCES)."""

    masking_rate: str = "0.15"
    """A rate, or a schedule such as ``linear:0.05:0.25:100000`` (docs/mlm_data.md)."""

    whole_word_masking: bool = False
    """Mask whole words (per the tokenizer's word-start convention)."""

    num_workers: int = 0
    """DataLoader worker processes per rank (0: load in the training process)."""

    def __post_init__(self) -> None:
        if isinstance(self.data_path, str):
            self.data_path = tuple(self.data_path.split())
        self.data_path = tuple(str(p) for p in self.data_path)
        check_int(self, "seq_length", 8)
        check_int(self, "num_workers", 0)
        check_choice(self, "packing", PACKINGS)
        if self.data_path and not self.tokenizer:
            raise _bad("DataConfig", "tokenizer", self.tokenizer,
                       "a tokenizer directory is required with data_path (the one the data "
                       "was preprocessed with)")
        self.masking_rate = str(self.masking_rate)


@dataclass
class ModelChoice:
    """Which model is trained: alum.models' megatron-core BERT/RoBERTa, or a local HF model."""

    model_kind: str = "megatron"
    """``megatron``: alum.models' BertMLM on megatron-core layers (TP=1 here), built from
    ``model_size``. ``hf``: a Hugging Face masked-LM (``hf_model`` directory, continual
    pre-training) through alum.pretrain.hf_mlm_adapter."""

    model_size: str = "tiny"
    """Named size for ``megatron``: tiny, small, base, large (alum.models.NAMED_SIZES)."""

    family: str = "bert"
    """``bert`` or ``roberta`` (for ``megatron``; an HF model brings its own)."""

    hf_model: Optional[str] = None
    """Local HF model directory for ``model_kind=hf``; a missing MLM head is created."""

    hidden_size: Optional[int] = None
    """Override of the named size's hidden width (megatron; the MLP becomes 4x). On the
    command line, size tiny without this option means 128 (the main job's model)."""

    num_layers: Optional[int] = None
    """Override of the named size's layer count (megatron)."""

    dropout: float = 0.1
    """Hidden and attention dropout (megatron; an HF model keeps its own)."""

    init_seed: int = 1234
    """Seed of the weight initialisation (megatron)."""

    freeze_encoder: bool = False
    """Train the MLM head alone: the embeddings and the encoder are frozen (an output
    layer tied to the word embeddings too). Warms up a newly initialised head on a
    released encoder before continual pre-training, so the encoder never trains through
    a random head (``model_kind=hf``; standard MLM only)."""

    def __post_init__(self) -> None:
        check_choice(self, "model_kind", MODEL_KINDS)
        check_choice(self, "family", FAMILIES)
        check_number(self, "dropout", 0.0, maximum=0.99)
        if self.model_kind == "hf" and not self.hf_model:
            raise _bad("ModelChoice", "hf_model", self.hf_model,
                       "model_kind='hf' needs a local model directory")
        if self.model_kind == "megatron" and self.hf_model:
            raise _bad("ModelChoice", "hf_model", self.hf_model,
                       "is only used with model_kind='hf'")
        for name in ("hidden_size", "num_layers"):
            if getattr(self, name) is not None:
                check_int(self, name, 1)
        if self.freeze_encoder and self.model_kind != "hf":
            raise _bad("ModelChoice", "freeze_encoder", True,
                       "needs model_kind='hf' (it warms up the head of a released model)")


@dataclass
class OptimConfig:
    """AdamW, its learning-rate schedule and clipping. ``None``: the DeepSpeed JSON's value."""

    lr: Optional[float] = None
    """Peak learning rate (after warmup)."""

    min_lr: float = 0.0
    """Learning rate at the end of the decay."""

    weight_decay: Optional[float] = None
    """AdamW weight decay, applied to weight matrices only (not biases, LayerNorms)."""

    adam_beta1: Optional[float] = None
    """AdamW β1."""

    adam_beta2: Optional[float] = None
    """AdamW β2."""

    adam_eps: Optional[float] = None
    """AdamW ε."""

    clip_grad: Optional[float] = None
    """Global gradient-norm clipping (0 disables)."""

    warmup_steps: int = 0
    """Linear warmup from 0 to ``lr`` over this many optimizer steps."""

    lr_decay: str = "linear"
    """Decay after warmup down to ``min_lr`` at the last step: linear, cosine or constant."""

    torch_adam: str = "auto"
    """Use torch's AdamW (``true``) or DeepSpeed's fused/CPU Adam (``false``). ``auto``:
    torch's on a machine without CUDA (DeepSpeed's would be compiled at start-up), else
    what the JSON says."""

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay", "adam_eps", "clip_grad"):
            if getattr(self, name) is not None:
                check_number(self, name, 0.0, strict=name in ("lr", "adam_eps"))
        for name in ("adam_beta1", "adam_beta2"):
            if getattr(self, name) is not None:
                check_number(self, name, 0.0, maximum=0.999999)
        check_number(self, "min_lr", 0.0)
        check_int(self, "warmup_steps", 0)
        check_choice(self, "lr_decay", LR_DECAYS)
        check_choice(self, "torch_adam", TORCH_ADAM)
        if self.lr is not None and self.min_lr > self.lr:
            raise _bad("OptimConfig", "min_lr", self.min_lr, f"exceeds lr={self.lr}")


@dataclass
class TrainConfig:
    """Steps, batches, precision and the DeepSpeed config."""

    train_steps: int = 400
    """Optimizer steps to train for (in total, a resumed run included)."""

    micro_batch_size: int = 16
    """Samples per rank per forward/backward."""

    grad_accum_steps: int = 1
    """Micro-batches accumulated per optimizer step (global batch = micro x accum x DP)."""

    ds_config: str = "zero1"
    """DeepSpeed JSON: a name in ds_configs/ (zero1, zero2, zero3, fp16, zero2_offload)
    or a path. Batch sizes, steps and the overrides below are filled in from here."""

    precision: str = "config"
    """``config``: as the JSON says; fp32, bf16 or fp16 (fp16 needs a GPU) override it."""

    tensor_parallel_size: int = 1
    """Ranks that split each layer (megatron-core TP; ``model_kind=megatron``; combines
    with pipeline_parallel_size). Data parallel is what is left of the world
    (world = TP x PP x DP). ALUM at TP > 1 takes its KL over the vocabulary-parallel
    logits, with the symmetric KL only (``loss='sym_kl'``)."""

    sequence_parallel: bool = False
    """Split LayerNorm/dropout activations along the sequence over the TP ranks (needs
    TP > 1 and seq_length divisible by TP; with PP too)."""

    pipeline_parallel_size: int = 1
    """Pipeline stages the layers are split into (megatron-core PP, 1F1B schedule;
    ``model_kind=megatron``, standard MLM, any TP, ZeRO stage 0 or 1, fp32/bf16, not
    fp16). The ``grad_accum_steps`` micro-batches of a step are the schedule's
    micro-batches."""

    virtual_pipeline_size: int = 1
    """Model chunks per pipeline stage for megatron-core's interleaved 1F1B schedule
    (1: plain 1F1B). Needs pipeline_parallel_size > 1, grad_accum_steps a multiple of
    pipeline_parallel_size, and num_layers divisible by PP x this."""

    activation_checkpointing: bool = False
    """Recompute each layer's activations in backward (if the model supports it)."""

    compile: bool = False
    """torch.compile each encoder layer (alum.pretrain.compile): inductor fuses the bias
    adds with GELU and dropout + residual + LayerNorm, forward and backward. The megatron
    model at TP=1 and PP=1, without activation checkpointing or ZeRO-3; where
    torch.compile does not work the layers stay eager, with a warning. Dropout masks
    differ from an eager run's (inductor's random kernels)."""

    seed: int = 1234
    """Seed of the data order/masks, dropout and ALUM's random start."""

    eval_interval: int = 100
    """Validate every this many optimizer steps (0: only at the end)."""

    eval_batches: int = 8
    """Micro-batches per validation."""

    log_interval: int = 10
    """Log training metrics every this many optimizer steps."""

    max_steps: Optional[int] = None
    """Stop after this many optimizer steps of *this* invocation (the schedule still
    spans ``train_steps``): short runs, tests, and time-boxed jobs."""

    collective_timeout_minutes: float = 10.0
    """How long a rank waits in one collective (all-reduce, barrier, pipeline send) before
    it fails: a rank whose peer froze or whose node lost its network ends with an error
    after this long instead of hanging (docs/multinode.md). Longer than the slowest step
    and checkpoint save."""

    def __post_init__(self) -> None:
        for name, low in (("train_steps", 1), ("micro_batch_size", 1), ("grad_accum_steps", 1),
                          ("eval_interval", 0), ("eval_batches", 1), ("log_interval", 1),
                          ("seed", 0)):
            check_int(self, name, low)
        if self.max_steps is not None:
            check_int(self, "max_steps", 0)
        check_number(self, "collective_timeout_minutes", 0.0, strict=True)
        check_int(self, "tensor_parallel_size", 1)
        if self.sequence_parallel and self.tensor_parallel_size == 1:
            raise _bad("TrainConfig", "sequence_parallel", True,
                       "needs tensor_parallel_size > 1")
        check_choice(self, "precision", PRECISIONS)
        check_int(self, "pipeline_parallel_size", 1)
        if self.compile:
            self._check_compile()
        check_int(self, "virtual_pipeline_size", 1)
        pp, vp = self.pipeline_parallel_size, self.virtual_pipeline_size
        if vp > 1:
            if pp == 1:
                raise _bad("TrainConfig", "virtual_pipeline_size", vp,
                           "needs pipeline_parallel_size > 1 (model chunks per stage of the "
                           "interleaved schedule)")
            if self.grad_accum_steps % pp:
                raise _bad("TrainConfig", "virtual_pipeline_size", vp,
                           f"needs grad_accum_steps (the schedule's micro-batches) to be a "
                           f"multiple of pipeline_parallel_size={pp}, but it is "
                           f"{self.grad_accum_steps} (megatron-core's interleaved schedule "
                           f"runs them in groups of PP)")
        # Tensor x pipeline parallel (with or without sequence parallel) is supported:
        # megatron-core's schedule sizes the p2p tensors for sequence parallel, and the
        # loop's clipping counts TP shards on every TP rank and replicas once.
        if pp > 1:
            ds = load_ds_config(self.ds_config)
            stage = zero_stage(ds)
            if stage > 1:
                raise _bad("TrainConfig", "pipeline_parallel_size", pp,
                           f"needs ZeRO stage 0 or 1, but ds_config={self.ds_config!r} is "
                           f"stage {stage} (ZeRO-2/3 partition gradients in hooks that the "
                           f"pipeline schedule's backward bypasses)")
            precision = precision_of(ds) if self.precision == "config" else self.precision
            if precision == "fp16":
                raise _bad("TrainConfig", "pipeline_parallel_size", pp,
                           "does not support fp16 (the schedule's backward has no loss "
                           "scaling); use fp32 or bf16")


    def _check_compile(self) -> None:
        """The runs ``compile`` is supported in (alum.pretrain.compile)."""
        why = None
        if self.activation_checkpointing:
            why = ("cannot be combined with activation_checkpointing (its recompute replays "
                   "megatron's RNG states around each layer, outside the compiled graph)")
        elif self.tensor_parallel_size > 1 or self.pipeline_parallel_size > 1:
            why = (f"needs tensor_parallel_size=1 and pipeline_parallel_size=1 (got "
                   f"{self.tensor_parallel_size} and {self.pipeline_parallel_size}): the "
                   f"compiled layers are not tested with megatron's communication")
        else:
            stage = zero_stage(load_ds_config(self.ds_config))
            if stage == 3:
                why = (f"cannot be combined with ZeRO-3 (ds_config={self.ds_config!r}), which "
                       f"gathers each layer's parameters in hooks around its forward")
        if why:
            raise _bad("TrainConfig", "compile", True, why)


@dataclass
class CheckpointConfig:
    """Where and when to save, and what to resume from."""

    output_dir: str = "alum_pretrain_output"
    """Run directory: ``checkpoints/``, ``tensorboard/``, ``config.json``, ``summary.json``."""

    save_interval: int = 0
    """Save every this many optimizer steps (0: only at the end)."""

    keep_last: int = 2
    """Complete checkpoints kept (older ones are deleted after a successful save; 0 keeps all)."""

    resume: str = "auto"
    """``auto``: continue from the newest complete checkpoint in output_dir if any;
    ``never``: start fresh (refused if output_dir holds checkpoints); or a checkpoint
    directory to load from."""

    resume_damaged: str = "refuse"
    """With resume ``auto``, when output_dir holds checkpoints and none is usable (each
    incomplete or failing its checksums): ``refuse`` (an error listing each checkpoint
    and its fault; nothing is changed) or ``start-fresh`` (move them all to
    ``checkpoints/damaged/``, kept for inspection, and train from step 0)."""

    save_at_end: bool = True
    """Save a checkpoint when training stops."""

    export_hf: Optional[str] = None
    """``model_kind=hf`` only: when training stops, write the model in Hugging Face format
    (the adapter's ``save_pretrained``, in the module's dtype, plus the tokenizer) to this
    directory, which ``AutoModelForMaskedLM`` / ``AutoModelForSequenceClassification``
    ``.from_pretrained`` (and alum-finetune --model) load. Written under a temporary name
    and renamed when complete; an existing directory there is replaced. Under ZeRO-3 the
    parameters are gathered first."""

    init_from: Optional[str] = None
    """Continual pre-training from another checkpoint's *model weights*: one of our
    checkpoints (a run directory, its checkpoints/ or a tag; e.g. written by
    ``alum-convert from-hf`` or ``reshape``) at this run's tensor/pipeline-parallel
    sizes. The optimizer, LR schedule and step start fresh (step 0); the architecture
    (family, sizes, vocabulary, positions) is the checkpoint's, and a run setting that
    disagrees (--hidden-size, --num-layers, --family, the tokenizer, TP/PP) is an error
    naming it. Precedence: when output_dir already holds a complete checkpoint of this
    run and resume is ``auto``, the run resumes from it and this is not loaded."""

    def __post_init__(self) -> None:
        if self.export_hf == "":
            self.export_hf = None
        if self.init_from == "":
            self.init_from = None
        if self.init_from is not None:
            if not isinstance(self.init_from, str):
                raise _bad("CheckpointConfig", "init_from", self.init_from, "must be a path")
            if self.resume not in ("auto", "never"):
                raise _bad("CheckpointConfig", "init_from", self.init_from,
                           f"cannot be combined with resume={self.resume!r} (a checkpoint to "
                           f"resume from); use one of the two")
        check_int(self, "save_interval", 0)
        check_int(self, "keep_last", 0)
        check_choice(self, "resume_damaged", ("refuse", "start-fresh"))
        if not self.output_dir:
            raise _bad("CheckpointConfig", "output_dir", self.output_dir, "must be a path")


@dataclass
class LoggingConfig:
    """Console, progress bar and DeepSpeed's monitors (TensorBoard, W&B, CSV); a monitor
    section in the DeepSpeed JSON takes precedence over these (pretrain/metrics_log.py)."""

    tensorboard: bool = True
    """Write TensorBoard events under output_dir/tensorboard (DeepSpeed's TensorBoard
    monitor)."""

    csv: bool = False
    """Write one CSV file per scalar under output_dir/csv (DeepSpeed's CSV monitor)."""

    wandb: bool = False
    """Log to Weights & Biases (DeepSpeed's W&B monitor; needs the wandb package; run
    files under output_dir unless WANDB_DIR is set; WANDB_MODE=offline logs locally)."""

    wandb_project: str = "alum-pretrain"
    """The W&B project."""

    wandb_group: Optional[str] = None
    """The W&B group (runs to show together), or none."""

    wandb_team: Optional[str] = None
    """The W&B team (entity), or none: your default entity."""

    progress_bar: bool = True
    """tqdm progress bar on the main rank."""

    peak_tflops: Optional[float] = None
    """Peak TFLOP/s of one device for MFU (default: known GPUs' dense bf16/fp16 peak;
    none on CPU, where MFU is not reported)."""

    def __post_init__(self) -> None:
        if self.peak_tflops is not None:
            check_number(self, "peak_tflops", 0.0, strict=True)
        if not self.wandb_project:
            raise _bad("LoggingConfig", "wandb_project", self.wandb_project,
                       "must be a project name")


@dataclass
class PretrainConfig:
    """A whole pre-training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelChoice = field(default_factory=ModelChoice)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    alum: Optional[AlumConfig] = None
    """ALUM's adversarial term (None: standard MLM only). Its ``start_step`` is the
    curriculum: standard MLM before that optimizer step."""
    alum_positions: str = "masked"
    """Where the adversarial KL is taken: ``masked`` (the predicted positions, as the
    authors' pre-training code) or ``all`` (every non-padding position)."""
    alum_order: str = "auto"
    """The order of ALUM's passes (docs/algorithm.md, cost model): ``fast`` keeps the clean
    and perturbed graphs alive together (≈2× activation memory, (6+2K)F); ``lean`` runs
    one graph at a time (≈1× activation memory, one forward more). Same gradients.
    ``auto``: fast, or lean under pipeline parallelism (the only order there)."""

    def __post_init__(self) -> None:
        check_choice(self, "alum_positions", ALUM_POSITIONS)
        check_choice(self, "alum_order", ALUM_ORDERS)
        if self.alum is not None and self.train.pipeline_parallel_size > 1 \
                and self.alum_order == "fast":
            raise _bad("PretrainConfig", "alum_order", "fast",
                       "under pipeline parallelism ALUM runs in the lean order (separate "
                       "schedule passes, alum.pretrain.pipeline_alum); use 'lean' or 'auto'")
        if self.alum is not None and not isinstance(self.alum, AlumConfig):
            raise _bad("PretrainConfig", "alum", self.alum, "must be an AlumConfig or None")
        if self.alum is not None and self.alum.start_step >= self.train.train_steps \
                and self.alum.alpha > 0:
            raise _bad("AlumConfig", "start_step", self.alum.start_step,
                       f"is not before train_steps={self.train.train_steps}: ALUM would never "
                       f"run (use --no-alum for standard training)")
        if self.checkpoint.init_from and self.model.model_kind != "megatron":
            raise _bad("CheckpointConfig", "init_from", self.checkpoint.init_from,
                       "needs model_kind='megatron' (an HF model starts from --hf-model)")
        if self.checkpoint.export_hf and self.model.model_kind != "hf":
            raise _bad("CheckpointConfig", "export_hf", self.checkpoint.export_hf,
                       "needs model_kind='hf' (the megatron-core model has no HF export here)")
        if self.train.compile and self.model.model_kind != "megatron":
            raise _bad("TrainConfig", "compile", True,
                       "needs model_kind='megatron' (it compiles alum.models' encoder layers)")
        tp = self.train.tensor_parallel_size
        if tp > 1 and self.model.model_kind != "megatron":
            raise _bad("TrainConfig", "tensor_parallel_size", tp,
                       "needs model_kind='megatron' (an HF model trains at TP=1)")
        if tp > 1 and self.alum is not None and self.alum.loss != "sym_kl":
            raise _bad("AlumConfig", "loss", self.alum.loss,
                       f"tensor_parallel_size={tp} takes ALUM's KL over the vocabulary-parallel "
                       f"logits with the symmetric KL only (loss='sym_kl')")
        if self.train.sequence_parallel and self.alum is not None \
                and self.alum.level == "sequence":
            raise _bad("AlumConfig", "level", "sequence",
                       "with sequence_parallel each rank holds a shard of the sequence; the "
                       "sequence-level norm is not reduced across shards here (use "
                       "level='token', the paper's, or turn sequence_parallel off)")
        pp = self.train.pipeline_parallel_size
        if pp > 1 and self.model.model_kind != "megatron":
            raise _bad("TrainConfig", "pipeline_parallel_size", pp,
                       "needs model_kind='megatron' (an HF model trains at PP=1)")
        if pp > 1 and self.alum is not None and self.train.virtual_pipeline_size > 1:
            raise _bad("TrainConfig", "virtual_pipeline_size", self.train.virtual_pipeline_size,
                       "ALUM under pipeline parallelism replays the clean pass's randomness "
                       "in the plain 1F1B schedule's forward order; the interleaved "
                       "schedule is not supported with ALUM (use virtual_pipeline_size=1)")
        if pp > 1 and self.alum is not None and self.alum.direction == "free":
            raise _bad("AlumConfig", "direction", "free",
                       f"is not supported under pipeline parallelism "
                       f"(pipeline_parallel_size={pp}): the pipeline's passes have no clean "
                       f"backward before the perturbed pass (use another direction, or PP=1)")
        if pp > 1 and self.alum is not None and self.alum.fraction < 1.0:
            raise _bad("AlumConfig", "fraction", self.alum.fraction,
                       f"is not supported under pipeline parallelism "
                       f"(pipeline_parallel_size={pp}): the pipeline's passes run whole "
                       f"micro-batches (use fraction=1, or PP=1)")
        if self.train.sequence_parallel and self.data.seq_length % tp:
            raise _bad("DataConfig", "seq_length", self.data.seq_length,
                       f"must be divisible by tensor_parallel_size={tp} (sequence_parallel)")
        if self.model.freeze_encoder and self.alum is not None:
            raise _bad("ModelChoice", "freeze_encoder", True,
                       "trains the MLM head alone, with standard MLM: ALUM perturbs the "
                       "encoder's input and regularises the encoder (use --no-alum)")
        if self.alum is not None and self.alum.loss == "mse":
            raise _bad("AlumConfig", "loss", "mse",
                       "is for regression heads; MLM uses sym_kl or kl")

    @property
    def resolved_alum_order(self) -> str:
        """``alum_order`` with ``auto`` resolved: lean under pipeline parallelism, else fast.
        The free direction has one order, its own two passes (clean forward and backward,
        then the perturbed ones: one graph at a time), which the lean order's entry point
        runs: ``lean`` whatever ``alum_order`` says."""
        if self.alum is not None and self.alum.direction == "free":
            return "lean"
        if self.alum_order != "auto":
            return self.alum_order
        return "lean" if self.train.pipeline_parallel_size > 1 else "fast"

    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["data"]["data_path"] = list(self.data.data_path)
        return out

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "PretrainConfig":
        parts = {"data": DataConfig, "model": ModelChoice, "optim": OptimConfig,
                 "train": TrainConfig, "checkpoint": CheckpointConfig, "logging": LoggingConfig}
        known = set(parts) | {"alum", "alum_positions", "alum_order"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"PretrainConfig has no field(s) {unknown}")
        kwargs: Dict[str, Any] = {k: parts[k](**values[k]) for k in parts if k in values}
        if values.get("alum") is not None:
            kwargs["alum"] = AlumConfig.from_dict(values["alum"])
        for key in ("alum_positions", "alum_order"):
            if key in values:
                kwargs[key] = values[key]
        return cls(**kwargs)


OPTION_CHOICES = {"precision": PRECISIONS, "lr_decay": LR_DECAYS, "model_kind": MODEL_KINDS,
                  "packing": PACKINGS, "torch_adam": TORCH_ADAM, "family": FAMILIES,
                  "model_size": MODEL_SIZES, "alum_positions": ALUM_POSITIONS}
"""The fields whose command-line option takes a fixed set of values (alum.pretrain.cli)."""
