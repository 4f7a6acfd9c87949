"""Training configuration: OmegaConf structured configs, YAML files + dotted overrides.

``epng train --config demo_cpu optim.lr=2e-4 data.image_size=320`` merges, in order:
these defaults, the YAML file, the ``key=value`` overrides. ``--config`` is a YAML file
or the name of a config bundled with the package (`epng.configs`); a file that exists
wins. Unknown keys and ill-typed values are refused with the offending key named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from epng.configs import get_config_file, list_configs
from epng.device import PRECISIONS
from epng.engine.preemption import parse_signals
from epng.errors import ConfigError
from epng.io.limits import InputLimits


@dataclass
class DataSection:
    root: str = "data/png"
    train_split: str = "train2017"
    val_split: str = "val2017"
    image_size: int = 640  # input side S (paper: 640x640)
    resize: str = "square"  # "square" (paper) or "letterbox" (aspect-preserving + pad)
    max_length: int = 512  # word pieces; longer narratives are truncated and reported
    on_bad_sample: str = "skip"  # "skip" (count and go on) or "strict" (stop with the record named)
    num_workers: int = 2
    val_max_narratives: int | None = None  # periodic validation on a prefix of the val split
    cache_dir: str | None = None  # memory-mapped narrative cache (epng prepare); None: $EPNG_CACHE or none


@dataclass
class LrDrop:
    epoch: int  # from the start of this epoch (0-based) on ...
    lr: float  # ... the learning rate is this


@dataclass
class OptimSection:
    lr: float = 1e-5
    lr_drops: list[LrDrop] = field(default_factory=lambda: [LrDrop(5, 5e-6), LrDrop(10, 5e-7)])
    warmup_steps: int = 0
    weight_decay: float = 0.0
    epochs: int = 12
    batch_size: int = 8  # per process
    grad_accum: int = 1  # optimizer step every N batches; the loss is divided by N
    clip_grad_norm: float = 0.0  # 0 = no clipping
    ema_decay: float = 0.0  # 0 = no EMA; else per-step EMA used for evaluation only
    amp: str = "auto"  # an epng.device.Precision: fp32, bf16, or auto (bf16 where native); checked by load_config


@dataclass
class ModelSection:
    preset: str = "epng_lite0_minilm"
    # any EPNGConfig field, e.g. loss_weights (lambda_1..3), sal_tau, num_layers; image_size and
    # resize always come from the data section
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSection:
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda"
    max_steps: int = 0  # stop after this many optimizer steps (0 = all epochs)
    log_every: int = 10  # optimizer steps
    checkpoint_every: int = 500  # optimizer steps (and always at the end)
    keep_checkpoints: int = 2
    val_every: int = 0  # optimizer steps; 0 = at the end of every epoch
    max_bad_steps: int = 20  # consecutive non-finite losses before the run stops
    deterministic: bool = False  # torch.use_deterministic_algorithms (bit-exact resume on CPU)
    tensorboard: bool = True
    # signals that stop the run after the current optimizer step with a checkpoint (exit status 143); [] = none
    preempt_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])


@dataclass
class TrainConfig:
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)
    # bounds on the data's images, captions and annotation files (epng.io.limits); the
    # EPNG_<NAME> environment variables set them below the YAML file and the overrides
    limits: InputLimits = field(default_factory=InputLimits)


_CHOICES = {
    "data.resize": ("square", "letterbox"),
    "data.on_bad_sample": ("skip", "strict"),
    "optim.amp": PRECISIONS,
    "run.device": ("auto", "cpu", "cuda"),
}


def config_file(config: str | Path) -> Path:
    """``config`` as a YAML file: an existing file, else a bundled config name (``demo_cpu``, ``demo_cpu.yaml``)."""
    path = Path(config)
    if path.is_file():
        return path
    if str(config).removesuffix(".yaml") in list_configs():
        return get_config_file(str(config))
    raise ConfigError(f"{config}: no such config file, nor a bundled config (bundled: {', '.join(list_configs())})")


def load_config(config: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Defaults <- YAML file (a path or a bundled name, see :func:`config_file`) <- dotted
    ``key=value`` overrides, validated against :class:`TrainConfig`."""
    path = None if config is None else config_file(config)
    try:
        cfg = OmegaConf.structured(TrainConfig)
        cfg = OmegaConf.merge(cfg, {"limits": InputLimits.from_env().as_dict()})
        if path is not None:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"overrides must look like key=value, got {bad}")
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as err:
        raise ConfigError(f"{path or 'config'}: {err}".splitlines()[0]) from None
    for key, allowed in _CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            renamed = " ('none' is now called 'fp32')" if (key, value) == ("optim.amp", "none") else ""
            raise ConfigError(f"{key}={value!r}: must be one of {allowed}{renamed}")
    parse_signals(cfg.run.preempt_signals)
    input_limits(cfg)
    return cfg


def input_limits(cfg: DictConfig) -> InputLimits:
    """The ``limits`` section as :class:`InputLimits` (each value checked)."""
    return InputLimits(**OmegaConf.to_container(cfg.limits))


def save_config(cfg: DictConfig, path: Path) -> None:
    OmegaConf.save(cfg, path)
