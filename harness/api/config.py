"""Run configuration: frozen dataclasses, the only source of truth for a run's settings.

Pattern from torchtitan (`config_registry.py` functions return a full config; components
own nested Configs) with nanoGPT's type-checked ``--set key=value`` overrides. The only
environment variables read are the upstream `train_gpt.py` names (ENV_OVERRIDES), so a
bundled submission behaves like the baseline script.

Resolution order: the submission's ``build_config()`` -> the CPU smoke profile (only when
no CUDA device is present) -> the overrides a shipped bundle recorded from its run ->
upstream environment variables -> ``--set`` overrides; all applied at once, then checked.

Longer than 400 lines because it is the one definition of a run's settings: the dataclasses,
the dotted-key grammar that addresses their fields and the resolution order every entry point
uses; split apart, the key grammar and the fields it addresses would drift.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

from harness.api.config_checks import check_run_config
from harness.api.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the token shards and the tokenizer are."""

    data_path: str | None = None
    """Folder holding ``fineweb_train_*.bin`` / ``fineweb_val_*.bin``; None = the built-in default dataset."""
    tokenizer_path: str | None = None
    """SentencePiece ``.model`` used for BPB byte accounting; None = the one beside the default dataset."""
    vocab_size: int = 1024
    """Model vocabulary; must equal the tokenizer's vocabulary size."""
    default_variant: str = "sp1024"
    """Which built-in default dataset to use when data_path is None: "sp1024" or "bytes"
    (the same documents as raw UTF-8 bytes, tokens 0-255)."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The training loop (upstream names and defaults of the naive baseline)."""

    iterations: int = 20000
    """Maximum optimizer steps (the wallclock cap usually stops training first)."""
    train_batch_tokens: int = 524_288
    """Global tokens per optimizer step, over all ranks and micro-batches."""
    train_seq_len: int = 1024
    """Sequence length of training rows."""
    grad_accum_steps: int = 0
    """Micro-batches per step; 0 = 8 // world_size, so 1 GPU emulates the 8-GPU batch."""
    max_wallclock_seconds: float = 600.0
    """Cap on training time (compile priming and validation excluded); <= 0 disables it."""
    warmup_steps: int = 20
    """Compile-priming steps on training data, undone before the timed run (no LR warmup)."""
    warmdown_iters: int = 1200
    """Linear LR warmdown length, in steps, estimated from the wallclock when capped."""
    train_log_every: int = 200
    """Log a train_loss line every N steps (and steps 1-10)."""
    val_loss_every: int = 1000
    """Validate every N steps (and at step 0 and the end); 0 = only at the end."""
    seed: int = 1337
    """Seed for torch, numpy and Python's random."""
    grad_clip_norm: float = 0.0
    """Clip the total gradient norm to this value; 0 = off."""
    compile: bool = True
    """torch.compile the model on CUDA (never on CPU)."""
    load_model_path: str | None = None
    """Eval-only run (PR #560's LOAD_MODEL_PATH): score this pgolf artifact (or the one in
    this run folder) instead of training; the artifact is shipped byte for byte."""
    checkpoint_every_minutes: float = 0.0
    """Save ``checkpoint.pgck`` in the run folder every this many minutes of training time
    (checked after each step) and at the end of training, for ``--resume RUN_DIR``; 0 = off.
    May differ on resume."""
    stop_after_step: int = 0
    """For tests and planned interruptions: save a checkpoint after this step and end the
    process without exporting (resume it with ``--resume RUN_DIR``); 0 = off. May differ on resume."""


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Evaluation settings. How a run is scored is fixed by the harness; these only size it."""

    val_batch_size: int = 524_288
    """Global validation tokens per forward batch (split over ranks and grad-accum)."""
    eval_seq_len: int = 0
    """Window length of the sliding-window evaluation; 0 = train_seq_len."""
    eval_stride: int = 64
    """Sliding-window stride; >= eval_seq_len skips the sliding pass."""
    eval_batch_seqs: int = 32
    """Windows per forward batch per rank in the sliding-window evaluation."""
    max_eval_seconds: float = 600.0
    """Cap on the final evaluation time; exceeding it marks the result invalid."""
    val_max_tokens: int = 0
    """Score only the first N validation targets (smoke profile); 0 = the whole split."""
    adapter: Any = None
    """An ``adapter`` Config: score-first test-time training after the sliding pass, whose
    score becomes the headline (`harness.pipeline.adaptation`); None = no TTT."""
    ttt_chunk_tokens: int = 32_768
    """Targets per chunk of the TTT walk: each chunk is scored, then handed to the adapter."""


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything a run needs. Submissions build one in ``build_config()``."""

    name: str
    """Submission name (the folder name under ``submissions/``)."""
    model: Any
    """The architecture Config (registered kind ``arch``)."""
    optimizer: Any
    """The optimizer Config (kind ``optimizer``)."""
    quantizer: Any
    """The quantizer Config (kind ``quantizer``)."""
    compressor: Any
    """The compressor Config (kind ``compressor``)."""
    schedule: Any = None
    """The LR schedule Config (kind ``schedule``); None = the upstream wallclock warmdown
    over ``train.warmdown_iters`` (`harness.pipeline.trainer.lr_multiplier`)."""
    plugins: tuple[Any, ...] = ()
    """Extra observer Configs (averaging, QAT, ...); each ``build()``s a pluggy plugin object."""
    author: str = ""
    """Author's display name for ``submission.json``."""
    github_id: str = ""
    """Author's GitHub handle."""
    track: str = "10min_16mb"
    """Leaderboard track: ``10min_16mb`` or ``non_record_16mb``."""
    blurb: str = ""
    """One-line summary for the leaderboard."""
    compress_code: bool = True
    """Ship ``train_gpt.py`` as an lzma+base85 self-extracting bundle (counted as shipped, as
    upstream records do since PR #1285); False ships the readable bundle."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cpu_profile: Mapping[str, Any] = field(default_factory=lambda: cpu_smoke_profile())
    """Overrides applied when no CUDA device is present; the result is labelled ``protocol: smoke``."""


def cpu_smoke_profile(
    *,
    batch_tokens: int = 8192,
    val_tokens: int = 16384,
    seq_len: int = 1024,
    eval_batch_seqs: int = 32,
    steps: int | None = None,
    cap_s: float = 150.0,
) -> dict[str, Any]:
    """The CPU smoke overrides, sized by the few numbers that differ between models.

    Sized for 2 CPU cores (about 550 train tokens/s for the 9x512 baseline under bf16
    autocast, 2,600 eval tokens/s; a sliding window at stride 64 costs window/64 forward
    tokens per scored token), so a default main job ends in < 10 min. Rows of ``seq_len``
    tokens for training and evaluation, no compile priming, no periodic val.

    ``steps``: a step budget (``train.iterations``), so a smoke run trains the same steps,
    and writes the same bytes, however loaded the machine is; ``cap_s`` is then only a safety
    net. Pair it with a step-counted schedule in the submission's profile (the default
    warmdown is re-estimated from the wallclock). Without ``steps``, training stops at the
    ``cap_s`` wallclock cap.
    """
    profile: dict[str, Any] = {
        "train.train_batch_tokens": batch_tokens,
        "train.train_seq_len": seq_len,
        "train.grad_accum_steps": 1,
        "train.max_wallclock_seconds": cap_s,
        "train.warmup_steps": 0,
        "train.warmdown_iters": 10,
        "train.train_log_every": 5,
        "train.val_loss_every": 0,
        "eval.eval_seq_len": seq_len,
        "eval.val_batch_size": val_tokens,
        "eval.val_max_tokens": val_tokens,
        "eval.eval_batch_seqs": eval_batch_seqs,
    }
    if steps is not None:
        profile["train.iterations"] = steps
    return profile


CPU_SMOKE_PROFILE: dict[str, Any] = cpu_smoke_profile()


# Upstream train_gpt.py environment variables -> config keys.
ENV_OVERRIDES: dict[str, str] = {
    "SEED": "train.seed",
    "DATA_PATH": "data.data_path",
    "TOKENIZER_PATH": "data.tokenizer_path",
    "VOCAB_SIZE": "data.vocab_size",
    "ITERATIONS": "train.iterations",
    "TRAIN_BATCH_TOKENS": "train.train_batch_tokens",
    "TRAIN_SEQ_LEN": "train.train_seq_len",
    "GRAD_ACCUM_STEPS": "train.grad_accum_steps",
    "MAX_WALLCLOCK_SECONDS": "train.max_wallclock_seconds",
    "WARMUP_STEPS": "train.warmup_steps",
    "WARMDOWN_ITERS": "train.warmdown_iters",
    "TRAIN_LOG_EVERY": "train.train_log_every",
    "VAL_LOSS_EVERY": "train.val_loss_every",
    "VAL_BATCH_SIZE": "eval.val_batch_size",
    "EVAL_SEQ_LEN": "eval.eval_seq_len",
    "EVAL_STRIDE": "eval.eval_stride",
    "EVAL_BATCH_SEQS": "eval.eval_batch_seqs",
    "LOAD_MODEL_PATH": "train.load_model_path",
    "TTT_CHUNK_TOKENS": "eval.ttt_chunk_tokens",
}

_COMPONENT_FIELDS = ("model", "optimizer", "quantizer", "compressor")


def valid_keys(config: Any, prefix: str = "") -> list[str]:
    """Every dotted key that ``apply_overrides`` accepts for ``config``."""
    keys: list[str] = []
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value) and not isinstance(value, type):
            if f.name in ("adapter", "schedule"):  # eval.adapter=none turns TTT off; a profile
                keys.append(prefix + f.name)  # may replace a set schedule with another kind
            keys.extend(valid_keys(value, f"{prefix}{f.name}."))
        elif f.name == "plugins" and isinstance(value, tuple):
            for plugin in value:  # addressed by module name: plugins.ema.decay
                if is_dataclass(plugin) and not isinstance(plugin, type):
                    keys.extend(valid_keys(plugin, f"{prefix}plugins.{plugin_key(plugin)}."))
        elif f.name == "schedule":  # a component: only a schedule Config replaces it (cpu_profile)
            keys.append(prefix + f.name)
        elif f.name not in ("plugins", "cpu_profile"):  # components, not values
            keys.append(prefix + f.name)
    return keys


def is_component_config(value: Any) -> bool:
    """A component's Config: a dataclass instance with a ``build`` method."""
    return is_dataclass(value) and not isinstance(value, type) and callable(getattr(value, "build", None))


def plugin_key(plugin: Any) -> str:
    """The name a ``RunConfig.plugins`` entry is addressed by in overrides: its module's name
    (``plugins.averaging.ema`` -> ``ema``), which is also its registered name."""
    return type(plugin).__module__.rsplit(".", 1)[-1]


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (often a string from the environment or CLI) to ``annotation``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if isinstance(value, str) and value.lower() in ("none", "null", "") and type(None) in args:
            return None
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: cannot use {value!r}")
    if annotation is Any or origin is not None:
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{key}: expected a boolean (true/false/1/0), got {value!r}")
    if annotation in (int, float, str):
        if isinstance(value, bool) and annotation is not bool:
            raise ConfigError(f"{key}: expected {annotation.__name__}, got boolean {value!r}")
        try:
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            if annotation is int and isinstance(value, str):
                return int(float(value)) if float(value).is_integer() else int(value)
            return annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}") from None
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise ConfigError(f"{key}: cannot set a value of type {annotation!r} from {value!r}")


def apply_overrides(config: Any, overrides: Mapping[str, Any], source: str = "--set") -> Any:
    """Return a copy of ``config`` with dotted ``overrides`` applied, type-checked.

    Unknown keys raise ``ConfigError`` listing the valid keys; ``source`` names where the
    overrides came from (``--set``, ``environment``, ``cpu profile``) in messages. Every Config
    is rebuilt once with all of its new values, so fields checked together (``num_heads`` and
    ``num_kv_heads``) may be changed together.
    """
    _check_keys(config, overrides, source)
    return _apply_tree(config, _nest(overrides))


def _check_keys(config: Any, overrides: Mapping[str, Any], source: str) -> None:
    valid = valid_keys(config)
    for key in overrides:
        if key not in valid:
            raise ConfigError(f"unknown config key {key!r} (from {source}); valid keys: {', '.join(valid)}")


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"model.a": 1, "model.b": 2}`` -> ``{"model": {"a": ("model.a", 1), "b": ("model.b", 2)}}``."""
    tree: dict[str, Any] = {}
    for key, value in overrides.items():
        *heads, leaf = key.split(".")
        node = tree
        for head in heads:
            node = node.setdefault(head, {})
        node[leaf] = (key, value)
    return tree


def _apply_tree(obj: Any, tree: dict[str, Any]) -> Any:
    changes: dict[str, Any] = {}
    hints = typing.get_type_hints(type(obj))
    for head, sub in tree.items():
        if head == "plugins" and isinstance(obj, RunConfig):
            changes[head] = tuple(
                _apply_tree(p, sub[plugin_key(p)]) if plugin_key(p) in sub else p for p in obj.plugins
            )
        elif isinstance(sub, dict):
            changes[head] = _apply_tree(getattr(obj, head), sub)
        elif head == "schedule" and isinstance(obj, RunConfig):
            key, value = sub
            if value is not None and not is_component_config(value):
                raise ConfigError(
                    f"{key}: expected a schedule Config (set it in a submission's cpu_profile) or None, "
                    f"got {value!r}"
                )
            changes[head] = value
        elif head == "adapter" and isinstance(obj, EvalConfig):
            changes[head] = _adapter_value(*sub)
        else:
            key, value = sub
            changes[head] = _coerce(value, hints.get(head, Any), key)
    return replace(obj, **changes) if changes else obj


def _adapter_value(key: str, value: Any) -> Any:
    """``eval.adapter`` is set whole only to an adapter Config or to None (``none`` turns TTT off)."""
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
        return None
    if not is_component_config(value):
        raise ConfigError(
            f"{key}: expected an adapter Config (set it in the submission or its cpu_profile) or None, "
            f"got {value!r}; its fields are set as {key}.<field>"
        )
    return value


def env_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """The upstream environment variables that are set, as dotted config overrides."""
    return {ENV_OVERRIDES[name]: environ[name] for name in ENV_OVERRIDES if environ.get(name, "") != ""}


def parse_set_args(items: list[str]) -> dict[str, str]:
    """Parse ``["a.b=1", ...]`` from ``--set``; a missing ``=`` is an error naming the item."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.iterations=100")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def resolve(
    config: RunConfig,
    *,
    cuda: bool,
    environ: Mapping[str, str],
    sets: Mapping[str, str],
    recorded: Mapping[str, str] | None = None,
) -> RunConfig:
    """Apply the CPU profile (without CUDA), the overrides a shipped bundle recorded, the
    environment, then ``--set``, in that order (a later source wins a key), all at once; then
    check the values that only make sense together (`harness.api.config_checks`)."""
    if not isinstance(config, RunConfig):
        raise ConfigError(f"build_config() must return a RunConfig, got {type(config).__name__}")
    for name in _COMPONENT_FIELDS:
        value = getattr(config, name)
        if not is_component_config(value):
            raise ConfigError(f"RunConfig.{name} must be a component Config with build(), got {value!r}")
    for value in ([config.schedule] if config.schedule is not None else []) + list(config.plugins):
        if not is_component_config(value):
            raise ConfigError(
                f"RunConfig.schedule/plugins entries must be Configs with build(), got {value!r}"
            )
    _adapter_value("eval.adapter", config.eval.adapter)
    sources = [
        ("cpu profile", config.cpu_profile if not cuda else {}),
        ("the shipped train_gpt.py", recorded or {}),
        ("environment", env_overrides(environ)),
        ("--set", sets),
    ]
    merged: dict[str, Any] = {}
    for source, overrides in sources:
        _check_keys(config, overrides, source)
        merged.update(overrides)
    config = _apply_tree(config, _nest(merged))
    check_run_config(config)
    return config


def component_modules(config: RunConfig) -> list[str]:
    """Modules defining the run's components: the plugins a run (and its bundle) registers."""
    optional = [c for c in (config.schedule, config.eval.adapter) if c is not None]
    configs = [getattr(config, n) for n in _COMPONENT_FIELDS] + optional + list(config.plugins)
    seen: dict[str, None] = {}
    for cfg in configs:
        seen.setdefault(type(cfg).__module__, None)
    return list(seen)


def to_jsonable(config: Any) -> Any:
    """The resolved config as plain JSON values; components carry their class name."""
    if is_dataclass(config) and not isinstance(config, type):
        out: dict[str, Any] = {}
        if type(config).__name__ not in ("RunConfig", "DataConfig", "TrainConfig", "EvalConfig"):
            out["_class"] = f"{type(config).__module__}.{type(config).__qualname__}"
        for f in fields(config):
            out[f.name] = to_jsonable(getattr(config, f.name))
        return out
    if isinstance(config, Mapping):
        return {str(k): to_jsonable(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return [to_jsonable(v) for v in config]
    if isinstance(config, (str, int, float, bool)) or config is None:
        return config
    return repr(config)


def dumps(config: Any) -> str:
    """Canonical one-line JSON of the resolved config (logged and stored with the run)."""
    return json.dumps(to_jsonable(config), sort_keys=True, separators=(",", ":"))


__all__ = [
    "CPU_SMOKE_PROFILE",
    "cpu_smoke_profile",
    "ENV_OVERRIDES",
    "DataConfig",
    "EvalConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "component_modules",
    "dumps",
    "env_overrides",
    "parse_set_args",
    "resolve",
    "valid_keys",
]
