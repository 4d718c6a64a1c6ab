"""Plain AdamW over every parameter (kind ``optimizer``, name ``adamw``).

AdamW is Adam with decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay
Regularization", ICLR 2019; ``torch.optim.AdamW``): p <- p·(1 - lr·wd) - lr·m̂/(√v̂ + eps).
The defaults are the byte-GPT reference recipe (dancinlab Lane-G ref trainers,
docs/techniques.md §11.1): lr 3e-4, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on *all* parameters,
LayerNorm gains, biases and embeddings included, because the reference hands
``model.parameters()`` to one AdamW. ``decay_all=False`` is the common alternative (GPT-2 /
nanoGPT's ``configure_optimizers``): decay only parameters with at least 2 dimensions (the
matrices and the embedding tables) and leave LayerNorm gains and biases undecayed.

Gradient clipping (reference: 1.0) is the harness's ``TrainConfig.grad_clip_norm``; the LR
schedule multiplies the base lr (``step(step, lr_scale)``), so the decay applied per step is
lr·lr_scale·wd, as in the reference, which sets each group's lr every step. CUDA parameters
use the fused kernel; elsewhere torch picks its default (foreach) implementation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.registry import Registry


@dataclass(frozen=True, kw_only=True)
class AdamWConfig:
    """AdamW hyperparameters (the byte-GPT reference's values by default)."""

    lr: float = 3e-4
    """Peak learning rate; the schedule's multiplier scales it every step."""
    betas: tuple[float, float] = (0.9, 0.95)
    """Adam's (beta1, beta2)."""
    eps: float = 1e-8
    """Adam's epsilon."""
    weight_decay: float = 0.1
    """Decoupled weight decay coefficient: p *= 1 - lr·lr_scale·weight_decay each step."""
    decay_all: bool = True
    """True (reference): decay every parameter. False: decay only parameters with >= 2
    dimensions; LayerNorm weights and biases get no decay."""

    def __post_init__(self) -> None:
        _validate(self)

    def build(self, model: nn.Module) -> AdamWOptimizerSet:
        """One AdamW over ``model``'s trainable parameters (two groups when not decay_all)."""
        return AdamWOptimizerSet(model, self)


def _validate(cfg: AdamWConfig) -> None:
    """Refuse values AdamW cannot use, naming the field."""
    for name in ("lr", "eps", "weight_decay"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigError(f"adamw.{name}: expected a number >= 0, got {value!r}")
    betas = cfg.betas
    if (
        not isinstance(betas, (tuple, list))
        or len(betas) != 2
        or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
    ):
        raise ConfigError(f"adamw.betas: expected two numbers in [0, 1), got {betas!r}")
    if not isinstance(cfg.decay_all, bool):
        raise ConfigError(f"adamw.decay_all: expected a bool, got {cfg.decay_all!r}")


def param_groups(model: nn.Module, cfg: AdamWConfig) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Trainable parameters split into ``decay`` and ``no_decay`` (empty when decay_all).

    A tied tensor appears once (``named_parameters`` deduplicates by identity).
    """
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {"decay": [], "no_decay": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decayed = cfg.decay_all or p.ndim >= 2
            groups["decay" if decayed else "no_decay"].append((name, p))
    return groups


class AdamWOptimizerSet:
    """``harness.api.protocols.OptimizerSet`` around one ``torch.optim.AdamW``.

    Each param group carries ``base_lr``; ``step`` sets lr = base_lr·lr_scale.
    """

    def __init__(self, model: nn.Module, cfg: AdamWConfig) -> None:
        self.cfg = cfg
        groups = param_groups(model, cfg)
        specs = []
        for key, wd in (("decay", cfg.weight_decay), ("no_decay", 0.0)):
            params = [p for _, p in groups[key]]
            if params:
                specs.append(
                    {"params": params, "weight_decay": wd, "lr": cfg.lr, "base_lr": cfg.lr, "name": key}
                )
        if not specs:
            raise ConfigError("adamw: the model has no trainable parameters")
        kwargs: dict[str, Any] = dict(lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
        everything = [p for spec in specs for p in spec["params"]]
        if all(p.is_cuda for p in everything):
            kwargs["fused"] = True
        self.optimizer = torch.optim.AdamW(specs, **kwargs)

    def zero_grad(self) -> None:
        """Clear every gradient (set to None)."""
        self.optimizer.zero_grad(set_to_none=True)

    def step(self, step: int, lr_scale: float) -> None:
        """One AdamW update at lr = base_lr·lr_scale (``step`` is unused: no momentum warm-up)."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_scale
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        """A deep copy of the optimizer state (safe to keep while training goes on)."""
        return {"adamw": copy.deepcopy(self.optimizer.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output; the argument is copied, so it can be reused."""
        if set(state) != {"adamw"}:
            raise ConfigError(f"adamw: optimizer state has keys {sorted(state)}, expected ['adamw']")
        self.optimizer.load_state_dict(copy.deepcopy(state["adamw"]))

    def describe(self) -> list[str]:
        """One line per param group: lr, betas, weight decay, tensor and parameter counts."""
        fused = bool(self.optimizer.defaults.get("fused"))
        lines = []
        for group in self.optimizer.param_groups:
            numel = sum(p.numel() for p in group["params"])
            lines.append(
                f"optimizer:adamw group:{group['name']} lr:{group['base_lr']:g} "
                f"betas:{tuple(group['betas'])} "
                f"eps:{group['eps']:g} weight_decay:{group['weight_decay']:g} fused:{fused} "
                f"tensors:{len(group['params'])} params:{numel}"
            )
        return lines


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``AdamWConfig`` as the ``optimizer`` component ``adamw``."""
    registry.register("optimizer", "adamw", AdamWConfig)
