"""Upstream numerics (kind ``arch_component``, name ``upstream_numerics``): run the GPT with the
dtypes upstream's baseline script actually ships, not the ones it meant.

Upstream's baseline ``train_gpt.py`` (openai/parameter-golf) builds its model, calls
``.bfloat16()`` and then puts every Linear weight and every small or control parameter back to
fp32. Two things stay bf16 that the rest of the harness keeps fp32 (docs/techniques.md §2.3):

* the token embedding table, so the residual stream enters the blocks in bf16;
* the RoPE ``inv_freq`` buffer, which makes upstream build positions, frequencies and the
  cos/sin tables in bf16: positions above 256 are rounded (513 of 0..1023 stay distinct).

This component restores both on the model it is attached to (`to_baseline_dtypes` and
``GPT.rope_dtype = bfloat16``), and returns the softcapped logits in fp32 as upstream's loss
takes them (``logits.float()`` after a bf16 softcap); it adds no parameter. ``pgolf import``
adds it, so weights trained by an upstream script are scored as that script scores them (equal
to upstream's ``eval_val`` to 1e-6 on its own int8 export, tests/unit/test_upstream_import.py).
It is off in every shipped submission: none of their records depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.api.hooks import hookimpl
from harness.api.registry import Registry


@dataclass(frozen=True, kw_only=True)
class UpstreamNumericsConfig:
    """No settings: the switch is whether the component is in ``GPTConfig.components``."""

    def build(self, model_cfg: Any, vocab_size: int) -> UpstreamNumerics:
        """The (parameter-free) module that retypes the host on attach."""
        return UpstreamNumerics()


class UpstreamNumerics(nn.Module):
    """Attaching it leaves the embedding tables bf16 and makes the RoPE tables bf16."""

    slot = "upstream_numerics"

    def attach(self, model: nn.Module) -> None:
        """GPT extension point, called once at build."""
        to_baseline_dtypes(model)
        model.rope_dtype = torch.bfloat16
        model.logits_fp32 = True

    def describe(self) -> list[str]:
        """Log line."""
        return ["upstream_numerics:True embedding:bf16 rope_tables:bf16"]


def to_baseline_dtypes(model: nn.Module) -> nn.Module:
    """Apply upstream's dtype policy to ``model``: embedding tables in bf16, everything else as it
    is (fp32 after a GPT's build); returns ``model``.

    Upstream casts the model to bf16 and then restores every Linear weight and every < 2-D or
    control-named parameter to fp32, which leaves only the embedding tables (``tok_emb``, and
    ``bigram.embed`` / ``ve_shared.embed`` when present) in bf16. A function of this module
    rather than a method of the GPT, which only this component's configurations need.
    """
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            module.to(torch.bfloat16)
    return model


@hookimpl
def pg_register_components(registry: Registry) -> None:
    """Register ``UpstreamNumericsConfig`` as the ``arch_component`` ``upstream_numerics``."""
    registry.register("arch_component", "upstream_numerics", UpstreamNumericsConfig)
