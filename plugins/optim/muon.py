"""Muon for the block matrices plus Adam for everything else (kind ``optimizer``, name ``muon``).

Muon (Keller Jordan, https://kellerjordan.github.io/posts/muon/, as used in modded-nanogpt)
replaces each 2-D update by an approximately orthogonal matrix: Nesterov momentum, then
five steps of the quintic Newton-Schulz iteration with coefficients (3.4445, -4.7750,
2.0315) in bf16, scaled by sqrt(max(1, rows/cols)). Routing, learning rates, the momentum
warm-up and the distributed work split follow the upstream naive baseline ``train_gpt.py``
of openai/parameter-golf (spec: docs/techniques.md §4.1, source B); decoupled weight decay on the
Muon matrices, AdamW for the token and scalar groups and name-pattern routing are the later
records' options (off by default). ``t1_optimizer()``, ``p1573_optimizer()`` and
``p1493_optimizer()`` return the settings of the T1 record (thwu1, 10L Int5-MLP, 2026-03-20),
of PR #1573 (12L RecycledCore) and of PR #1493 (2026-04-09 SP8192 3-layer recurrence); their
routing reproduces each script's hand-built parameter lists.

MuonEq-R (``row_normalize=True``; PR #1394, as PR #1493 runs it with MUON_ROW_NORMALIZE=1):
each row of the Nesterov update is divided by its L2 norm (floored at 1e-7, in fp32) before
Newton-Schulz, so every output unit enters the orthogonalisation with equal weight and the
update no longer depends on how the gradient's rows are scaled.

Deliberate differences from upstream:
* P1573 keeps its block matrices in four layer-stacked "banks" and runs a reduce-scatter /
  all-gather "parallel Muon" without DDP; here every block matrix is its own 2-D parameter
  under the baseline split below (same update per matrix, different communication). Its
  arithmetic (bf16 momentum, the batched Newton-Schulz's roundings, the shape factor taken
  with the learning rate) is ``bank_arithmetic``, which ``p1573_optimizer()`` turns on: with
  it, 20 CPU fp32 steps give P1573's own losses bit for bit (benchmarks/upstream_parity).
* Gradient clipping is the harness's (``TrainConfig.grad_clip_norm``), applied after DDP
  averaging as T1 does; P1573 clips each rank's local grad before its reduction.
* Upstream ignores 2-D parameters it does not list by hand; here they join the scalar group.
* AdamW's decay also shrinks control scalars (q_gain, attn/mlp scales, resid_mix, recycle
  a) toward 0, as upstream does (docs/techniques.md §13 row 13); an untied lm_head stays plain Adam.

Distributed: gradients arrive already averaged (DDP). Matrix i is owned by rank
i mod world, which keeps its momentum and runs Newton-Schulz; the updates travel in one
flat bf16 buffer that is all-reduced (SUM) and applied on every rank.

Longer than 400 lines because a plugin module holds exactly one component: Muon (Newton-Schulz,
Nesterov, momentum warm-up, decoupled weight decay, the rank work split) and the Adam groups it
is always paired with, plus the record presets.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from harness.api.errors import ConfigError
from harness.api.hooks import hookimpl
from harness.api.protocols import BASELINE_CONTROL_PATTERNS, is_control_tensor
from harness.api.registry import Registry

NS5_COEFFS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
TOKEN_EMBED_NAME = "tok_emb.weight"
TOKEN_PATTERNS: tuple[str, ...] = ("tok_emb",)
HEAD_PREFIX = "lm_head."
BLOCKS_PREFIX = "blocks."
FUSED_ADAM_DEVICES: tuple[str, ...] = ("cuda", "cpu")
"""Devices with a fused Adam kernel in every torch this project supports (>= 2.4)."""


@dataclass(frozen=True, kw_only=True)
class MuonConfig:
    """Learning rates and Muon settings (upstream ``Hyperparameters`` names and B defaults)."""

    matrix_lr: float = 0.04
    """Muon learning rate of the 2-D block matrices (MATRIX_LR)."""
    scalar_lr: float = 0.04
    """Adam learning rate of vectors, scalars and control-named tensors (SCALAR_LR)."""
    tied_embed_lr: float = 0.05
    """Adam learning rate of the token embedding when it is tied to the head (TIED_EMBED_LR)."""
    embed_lr: float = 0.6
    """Adam learning rate of the token embedding when the head is untied (EMBED_LR)."""
    head_lr: float = 0.008
    """Adam learning rate of an untied lm_head (HEAD_LR)."""
    momentum: float = 0.95
    """Muon momentum after the warm-up (MUON_MOMENTUM)."""
    momentum_warmup_start: float = 0.85
    """Muon momentum at the first step (MUON_MOMENTUM_WARMUP_START)."""
    momentum_warmup_steps: int = 500
    """Steps of the linear momentum warm-up; 0 = constant momentum (MUON_MOMENTUM_WARMUP_STEPS)."""
    backend_steps: int = 5
    """Newton-Schulz iterations per update (MUON_BACKEND_STEPS)."""
    nesterov: bool = True
    """Use the Nesterov form g + mu*buf instead of the plain momentum buffer."""
    weight_decay: float = 0.0
    """Decoupled weight decay of the Muon matrices: p *= 1 - lr*wd with the scheduled lr,
    before the update (baseline 0, T1 and P1573 0.04)."""
    adam_weight_decay: float = 0.0
    """Decoupled weight decay of the token and scalar groups: 0 uses torch.optim.Adam, > 0
    AdamW (p *= 1 - lr*wd, scheduled lr). An untied lm_head always stays on Adam."""
    embed_weight_decay: float | None = None
    """Weight decay of the token group alone (P1493 EMBED_WD 0.085, its scalars ADAM_WD 0.02);
    None = adam_weight_decay."""
    row_normalize: bool = False
    """MuonEq-R: divide each row of the Nesterov update by its L2 norm before Newton-Schulz
    (P1493 MUON_ROW_NORMALIZE)."""
    bank_arithmetic: bool = False
    """P1573's parallel-Muon arithmetic: the gradient rounded to bf16 and the momentum buffer
    and Nesterov sum kept in bf16; Newton-Schulz on the (1, rows, cols) stack its banks pass,
    transposed before the normalisation, with b·A + c·(A·A); the sqrt(max(1, rows/cols)) factor
    applied in fp32 with the learning rate instead of to the bf16 update."""
    beta1: float = 0.9
    """Adam beta1."""
    beta2: float = 0.95
    """Adam beta2."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    control_patterns: tuple[str, ...] = BASELINE_CONTROL_PATTERNS
    """Name substrings of 2-D tensors sent to the scalar Adam group instead of Muon
    (upstream CONTROL_TENSOR_NAME_PATTERNS)."""
    token_patterns: tuple[str, ...] = TOKEN_PATTERNS
    """Name substrings of token/embedding tables: Adam at tied_embed_lr (embed_lr if untied).
    Checked first, so they win over every other rule."""
    muon_extra_patterns: tuple[str, ...] = ()
    """Name substrings of 2-D matrices outside ``blocks.`` that go to Muon (T1: bigram.proj)."""
    scalar_extra_patterns: tuple[str, ...] = ()
    """Name substrings of 2-D tensors sent to the scalar Adam group even inside ``blocks.``
    or listed in muon_extra_patterns (P1573: bigram.proj, ve_shared.proj, attn_gate)."""

    def __post_init__(self) -> None:
        _validate(self)

    def build(self, model: nn.Module) -> MuonOptimizerSet:
        """The optimizer set over ``model``'s trainable parameters."""
        return MuonOptimizerSet(model, self)


def _validate(cfg: MuonConfig) -> None:
    """Refuse values the optimizers cannot use, naming the field."""
    for name in (
        "matrix_lr",
        "scalar_lr",
        "tied_embed_lr",
        "embed_lr",
        "head_lr",
        "weight_decay",
        "adam_weight_decay",
        "adam_eps",
    ):
        if not getattr(cfg, name) >= 0:
            raise ConfigError(f"muon.{name}: expected >= 0, got {getattr(cfg, name)!r}")
    if cfg.embed_weight_decay is not None and not cfg.embed_weight_decay >= 0:
        raise ConfigError(f"muon.embed_weight_decay: expected None or >= 0, got {cfg.embed_weight_decay!r}")
    for name in ("row_normalize", "bank_arithmetic"):
        if not isinstance(getattr(cfg, name), bool):
            raise ConfigError(f"muon.{name}: expected true or false, got {getattr(cfg, name)!r}")
    for name in ("momentum", "momentum_warmup_start", "beta1", "beta2"):
        if not 0 <= getattr(cfg, name) < 1:
            raise ConfigError(f"muon.{name}: expected a value in [0, 1), got {getattr(cfg, name)!r}")
    for name in ("momentum_warmup_steps", "backend_steps"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"muon.{name}: expected an int >= 0, got {value!r}")
    for name in ("control_patterns", "token_patterns", "muon_extra_patterns", "scalar_extra_patterns"):
        value = getattr(cfg, name)
        if not isinstance(value, (tuple, list)) or not all(isinstance(p, str) and p for p in value):
            raise ConfigError(f"muon.{name}: expected a tuple of non-empty strings, got {value!r}")


def newton_schulz5(g: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """Approximately orthogonalise a 2-D matrix (its U V^T) with the quintic iteration, in bf16.

    The coefficients trade exactness for speed: singular values that are not tiny relative
    to the largest land in roughly [0.7, 1.2] rather than at exactly 1, which Muon tolerates.
    """
    a, b, c = NS5_COEFFS
    x = g.bfloat16()
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1, so the iteration converges
    transposed = g.size(0) > g.size(1)
    if transposed:  # iterate on the wide side: A = X X^T is the smaller Gram matrix
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if transposed else x


def newton_schulz5_stacked(g: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """``newton_schulz5`` as P1573's banked Muon computes it: on a (1, rows, cols) stack (batched
    matmuls), turned wide before the normalisation, and c·(A·A) rather than (c·A)·A. The same
    map; the bf16 roundings differ, which is what ``MuonConfig.bank_arithmetic`` is for."""
    a, b, c = NS5_COEFFS
    x = g.bfloat16().unsqueeze(0)
    transposed = x.size(-2) > x.size(-1)
    if transposed:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return (x.mT if transposed else x).squeeze(0)


def row_normalized(u: Tensor, eps: float = 1e-7) -> Tensor:
    """MuonEq-R's equilibration: every row of ``u`` scaled to unit L2 norm (norms in fp32,
    floored at ``eps`` so an all-zero row stays zero), in ``u``'s dtype."""
    norms = u.float().norm(dim=-1, keepdim=True).clamp_min(eps)
    return u / norms.to(u.dtype)


def momentum_at(step: int, cfg: MuonConfig) -> float:
    """Muon momentum for the 1-based optimizer ``step``.

    Upstream interpolates with its 0-based step counter, so the first update uses
    ``momentum_warmup_start`` and ``momentum`` is reached at step warmup_steps + 1.
    """
    if cfg.momentum_warmup_steps <= 0:
        return cfg.momentum
    frac = min(max(step - 1, 0) / cfg.momentum_warmup_steps, 1.0)
    return (1.0 - frac) * cfg.momentum_warmup_start + frac * cfg.momentum


class Muon(torch.optim.Optimizer):
    """Muon over 2-D parameters, with the baseline's rank-strided work split."""

    def __init__(
        self,
        params: list[nn.Parameter],
        lr: float,
        momentum: float,
        backend_steps: int,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        row_normalize: bool = False,
        bank_arithmetic: bool = False,
    ) -> None:
        for p in params:
            if p.ndim != 2:
                raise ConfigError(f"muon: Muon takes 2-D parameters only, got shape {tuple(p.shape)}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            backend_steps=backend_steps,
            nesterov=nesterov,
            weight_decay=weight_decay,
            row_normalize=row_normalize,
            bank_arithmetic=bank_arithmetic,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        """One update of every group; collectives only when world size > 1."""
        if closure is not None:
            raise ConfigError("muon: closures are not supported")
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        world = dist.get_world_size() if distributed else 1
        rank = dist.get_rank() if distributed else 0
        for group in self.param_groups:
            self._step_group(group, world, rank, distributed)

    def _step_group(self, group: dict[str, Any], world: int, rank: int, distributed: bool) -> None:
        params: list[Tensor] = group["params"]
        if not params:
            return
        # Fixed layout on every rank, so the SUM all-reduce only adds the owner's slice to zeros.
        flat = torch.zeros(sum(p.numel() for p in params), device=params[0].device, dtype=torch.bfloat16)
        offset = 0
        for i, p in enumerate(params):
            if i % world == rank and p.grad is not None:
                flat[offset : offset + p.numel()] = self._orthogonal_update(p, group).reshape(-1)
            offset += p.numel()
        if distributed:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        lr, wd = group["lr"], group["weight_decay"]
        offset = 0
        for p in params:
            update = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
            if p.grad is None:  # DDP gives every rank the same grads, so this agrees everywhere
                continue
            if wd > 0:
                p.mul_(1.0 - lr * wd)
            scale = _shape_scale(p) if group.get("bank_arithmetic", False) else 1.0
            p.add_(update.to(p.dtype), alpha=-lr * scale)

    def _orthogonal_update(self, p: Tensor, group: dict[str, Any]) -> Tensor:
        banked = group.get("bank_arithmetic", False)
        g = p.grad.bfloat16() if banked else p.grad
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(g)
        buf = state["momentum_buffer"]
        mu = group["momentum"]
        buf.mul_(mu).add_(g)
        u = g.add(buf, alpha=mu) if group["nesterov"] else buf
        if group.get("row_normalize", False):
            u = row_normalized(u)
        if banked:  # the shape factor goes with the learning rate (_step_group)
            return newton_schulz5_stacked(u, steps=group["backend_steps"])
        o = newton_schulz5(u, steps=group["backend_steps"])
        return o * _shape_scale(p)


def _shape_scale(p: Tensor) -> float:
    # Keeps the per-entry update RMS comparable for tall matrices (Muon reference scaling).
    return max(1.0, p.size(0) / p.size(1)) ** 0.5


def group_of(name: str, p: Tensor, cfg: MuonConfig) -> str:
    """The group (``tok``, ``head``, ``muon`` or ``scalar``) of trainable parameter ``name``.

    Precedence, first match wins (patterns are substrings of the dotted name):
    1. ``token_patterns`` -> tok;  2. ``lm_head.`` prefix -> head;
    3. ``scalar_extra_patterns`` or ``control_patterns`` -> scalar;
    4. not 2-D -> scalar (naming it in ``muon_extra_patterns`` is an error);
    5. under ``blocks.`` or in ``muon_extra_patterns`` -> muon;  6. anything else -> scalar.
    """
    if is_control_tensor(name, cfg.token_patterns):
        return "tok"
    if name.startswith(HEAD_PREFIX):
        return "head"
    if is_control_tensor(name, cfg.scalar_extra_patterns) or is_control_tensor(name, cfg.control_patterns):
        return "scalar"
    extra = is_control_tensor(name, cfg.muon_extra_patterns)
    if p.ndim != 2:
        if extra:
            raise ConfigError(
                f"muon.muon_extra_patterns: {name!r} has shape {tuple(p.shape)}; Muon takes 2-D matrices only"
            )
        return "scalar"
    return "muon" if extra or name.startswith(BLOCKS_PREFIX) else "scalar"


def route_parameters(
    model: nn.Module, cfg: MuonConfig | None = None
) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Split trainable parameters into the groups ``tok``, ``head``, ``muon``, ``scalar``.

    With the default Config this is the baseline split: ``tok_emb.weight`` -> tok;
    ``lm_head.*`` -> head; non-control 2-D tensors under ``blocks.`` -> muon; all the rest
    (vectors, scalars, control-named tensors such as resid_mix and skip_weights) -> scalar.
    See ``group_of`` for the precedence. Each parameter lands in exactly one group.
    """
    cfg = cfg if cfg is not None else MuonConfig()
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {"tok": [], "head": [], "muon": [], "scalar": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[group_of(name, p, cfg)].append((name, p))
    routed = [id(p) for members in groups.values() for _, p in members]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(routed) == sorted(trainable) and len(set(routed)) == len(routed), (
        "parameter routing is not a partition"
    )
    return groups


class MuonOptimizerSet:
    """The baseline optimizers behind one face: Adam (token, head, scalars) plus Muon (matrices).

    Implements ``harness.api.protocols.OptimizerSet``. Each param group carries ``base_lr``;
    ``step`` sets lr = base_lr * lr_scale everywhere and the warmed-up Muon momentum.
    """

    def __init__(self, model: nn.Module, cfg: MuonConfig) -> None:
        self.cfg = cfg
        groups = route_parameters(model, cfg)
        if not groups["tok"]:
            raise ConfigError(
                f"muon: no trainable parameter matches token_patterns {cfg.token_patterns!r} "
                f"(expected a token embedding such as {TOKEN_EMBED_NAME!r})"
            )
        tied = not groups["head"]
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        tok_wd = cfg.adam_weight_decay if cfg.embed_weight_decay is None else cfg.embed_weight_decay
        self._add_adam("adam_tok", groups["tok"], cfg.tied_embed_lr if tied else cfg.embed_lr, wd=tok_wd)
        # Upstream (T1, P1573) keeps an untied head on plain Adam even when the rest use AdamW.
        self._add_adam("adam_head", groups["head"], cfg.head_lr, wd=0.0)
        if groups["muon"]:
            self.optimizers["muon"] = Muon(
                [p for _, p in groups["muon"]],
                lr=cfg.matrix_lr,
                momentum=momentum_at(1, cfg),
                backend_steps=cfg.backend_steps,
                nesterov=cfg.nesterov,
                weight_decay=cfg.weight_decay,
                row_normalize=cfg.row_normalize,
                bank_arithmetic=cfg.bank_arithmetic,
            )
            self.optimizers["muon"].param_groups[0]["base_lr"] = cfg.matrix_lr
        self._add_adam("adam_scalar", groups["scalar"], cfg.scalar_lr, wd=cfg.adam_weight_decay)

    def _add_adam(self, name: str, members: list[tuple[str, nn.Parameter]], lr: float, *, wd: float) -> None:
        if not members:
            return
        params = [p for _, p in members]
        kwargs: dict[str, Any] = dict(betas=(self.cfg.beta1, self.cfg.beta2), eps=self.cfg.adam_eps)
        # Fused kernels, as upstream asks for on every run (they take bf16 embedding tables, whose
        # Adam moments then stay bf16 as upstream's do). On CPU too: the fused kernel rounds
        # differently from the for-loop one, and that ulp drift, amplified by Newton-Schulz's bf16
        # rounding, moved the baseline's train loss 1.5e-3 from upstream's within 20 steps
        # (benchmarks/upstream_parity/train_parity.py; fused on both sides: identical bits).
        if all(p.device.type in FUSED_ADAM_DEVICES for p in params):
            kwargs["fused"] = True
        group = {"params": params, "lr": lr, "base_lr": lr}
        if wd > 0:
            self.optimizers[name] = torch.optim.AdamW([group], weight_decay=wd, **kwargs)
        else:
            self.optimizers[name] = torch.optim.Adam([group], **kwargs)

    def zero_grad(self) -> None:
        """Clear every gradient (set to None)."""
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def step(self, step: int, lr_scale: float) -> None:
        """One update: lr = base_lr * lr_scale, Muon momentum warmed up by the 1-based ``step``."""
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * lr_scale
                if name == "muon":
                    group["momentum"] = momentum_at(step, self.cfg)
        for opt in self.optimizers.values():
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        """A deep copy of every optimizer's state (safe to keep while training goes on)."""
        return {name: copy.deepcopy(opt.state_dict()) for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict()`` output; the argument is copied, so it can be reused."""
        if set(state) != set(self.optimizers):
            raise ConfigError(
                f"muon: optimizer state has groups {sorted(state)}, expected {sorted(self.optimizers)}"
            )
        for name, opt in self.optimizers.items():
            opt.load_state_dict(copy.deepcopy(state[name]))

    def describe(self) -> list[str]:
        """One line per optimizer: name, class, lr, tensor and parameter counts."""
        lines = []
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                numel = sum(p.numel() for p in group["params"])
                extra = f" momentum:{group['momentum']:.4f}" if name == "muon" else ""
                if group.get("row_normalize", False):
                    extra += " row_normalize:True"
                if group.get("bank_arithmetic", False):
                    extra += " bank_arithmetic:True"
                if group.get("weight_decay", 0.0) > 0:
                    extra += f" weight_decay:{group['weight_decay']:g}"
                lines.append(
                    f"optimizer:{name} kind:{type(opt).__name__} lr:{group['base_lr']:g}"
                    f" tensors:{len(group['params'])} params:{numel}{extra}"
                )
        return lines


# Control-name patterns of the records' scripts (upstream CONTROL_TENSOR_NAME_PATTERNS).
T1_CONTROL_PATTERNS: tuple[str, ...] = (*BASELINE_CONTROL_PATTERNS, "smear", "bigram.scale")
P1573_CONTROL_PATTERNS: tuple[str, ...] = (
    *BASELINE_CONTROL_PATTERNS,
    *("smear", "dtg_gate", "ve_layer_scales", "ve_shared.scale", "attn_gate", "vr_lambda"),
)


def t1_optimizer() -> MuonConfig:
    """T1 record (10L Int5-MLP, docs/techniques.md §4.1): Muon lr 0.02 with WD 0.04 (hard-coded
    upstream) over the block matrices and bigram.proj, momentum 0.92 -> 0.99 over 1500 steps;
    AdamW WD 0.04 on tokens {tok_emb, bigram.embed} (lr 0.03) and scalars (lr 0.02)."""
    return MuonConfig(
        matrix_lr=0.02,
        scalar_lr=0.02,
        tied_embed_lr=0.03,
        momentum=0.99,
        momentum_warmup_start=0.92,
        momentum_warmup_steps=1500,
        weight_decay=0.04,
        adam_weight_decay=0.04,
        control_patterns=T1_CONTROL_PATTERNS,
        token_patterns=("tok_emb", "bigram.embed"),
        muon_extra_patterns=("bigram.proj",),
    )


def p1573_optimizer() -> MuonConfig:
    """PR #1573 (12L RecycledCore, docs/techniques.md §4.1): Muon lr 0.025, MUON_WD 0.04 over the
    block matrices, same momentum warm-up as T1; AdamW ADAM_WD 0.04 on tokens {tok_emb,
    bigram.embed, ve_shared.embed} (lr 0.035) and scalars (lr 0.025), which here include the
    small matrices bigram.proj, ve_shared.proj and every block's attn_gate."""
    return MuonConfig(
        matrix_lr=0.025,
        scalar_lr=0.025,
        tied_embed_lr=0.035,
        momentum=0.99,
        momentum_warmup_start=0.92,
        momentum_warmup_steps=1500,
        weight_decay=0.04,
        adam_weight_decay=0.04,
        control_patterns=P1573_CONTROL_PATTERNS,
        token_patterns=("tok_emb", "bigram.embed", "ve_shared.embed"),
        bank_arithmetic=True,
        # Upstream appends these to the scalar list by hand; "recycle." keeps the RecycleModulation
        # a/b there whatever their shape.
        scalar_extra_patterns=("bigram.proj", "ve_shared.proj", "attn_gate", "recycle."),
    )


P1493_CONTROL_PATTERNS: tuple[str, ...] = (*BASELINE_CONTROL_PATTERNS, "skip_gates")


def p1493_optimizer() -> MuonConfig:
    """PR #1493 (2026-04-09 SP8192 3-layer recurrence, docs/techniques.md §4.1): MuonEq-R lr 0.022,
    MUON_WD 0.095, 5 Newton-Schulz steps, momentum 0.92 -> 0.99 over 1500 steps, over the block
    matrices; AdamW on the tied embedding (lr 0.03, EMBED_WD 0.085) and on the scalars, the
    skip weights and the skip gates (lr 0.02, ADAM_WD 0.02); betas (0.9, 0.95), eps 1e-8."""
    return MuonConfig(
        matrix_lr=0.022,
        scalar_lr=0.02,
        tied_embed_lr=0.03,
        momentum=0.99,
        momentum_warmup_start=0.92,
        momentum_warmup_steps=1500,
        backend_steps=5,
        weight_decay=0.095,
        adam_weight_decay=0.02,
        embed_weight_decay=0.085,
        row_normalize=True,
        control_patterns=P1493_CONTROL_PATTERNS,
    )


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``MuonConfig`` as the ``optimizer`` component ``muon``."""
    registry.register("optimizer", "muon", MuonConfig)
