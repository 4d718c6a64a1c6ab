"""The GPT host's parameters in the order the upstream script registers them
(`harness.api.protocols.ClipOrder`), for the gradient clip's total norm.

Float addition is not associative, so the clip coefficient's last bits follow the order in which
the per-tensor norms are summed (`harness.pipeline.grad_clip`). The host registers its add-on
components after the blocks, whereas the T1 record (2026-03-20 10L Int5-MLP) builds bigram and
smear right after the embedding; PR #1573 (12L RecycledCore) also holds its block matrices as
four stacked parameter banks. A GPT with neither components nor ``init_order="banks"``
registers exactly the upstream baseline's order, so the trainer's plain clip over
``parameters()`` already sums as upstream does. Only the other configurations need this order,
so it is a module of its own, imported by name (`harness.api.by_name`, named by
``GPTConfig.modules_by_name()``), and the host becomes a ``ClipOrder`` only with it.
"""

from __future__ import annotations

from torch import nn

# What P1573 registers after its blocks: the value embeddings (the host's BANKS_LATE_SLOTS, built
# late too), their per-layer scales and an untied head.
BANKS_LATE = frozenset({"ve_shared", "ve_layer_scales", "lm_head"})


def clip_order(model: nn.Module) -> list[nn.Parameter | tuple[nn.Parameter, ...]]:
    """Every parameter of the GPT ``model`` in upstream's registration order.

    Its own tensors (skip_weights), the token embedding, the add-on modules, then the blocks
    and the head. With ``init_order="banks"``, P1573's: its four banks (tuples: Q then
    out-projections, K then V, MLP up, MLP down, each over the layers) right after its own
    tensors, and the components it builds after the blocks (value embeddings, then the rest: the
    recycled core's modulations) after the blocks."""
    slots = {comp.slot for comp in model.components}
    banks = model.cfg.init_order == "banks"
    late = BANKS_LATE if banks else frozenset()

    def rank(name: str) -> int:
        head = name.split(".")[0]
        if head == name:
            return 0
        if head == "tok_emb":
            return 1
        if head in slots and head not in late:
            return 2 if not banks or head in ("bigram", "smear") else 5
        return 4 if head in late else 3

    order = [p for _, p in sorted(model.named_parameters(), key=lambda item: rank(item[0]))]
    if not banks:
        return order
    b = model.blocks
    stacks = [
        tuple(blk.attn.c_q.weight for blk in b) + tuple(blk.attn.proj.weight for blk in b),
        tuple(blk.attn.c_k.weight for blk in b) + tuple(blk.attn.c_v.weight for blk in b),
        tuple(blk.mlp.fc.weight for blk in b),
        tuple(blk.mlp.proj.weight for blk in b),
    ]
    stacked = {id(p) for stack in stacks for p in stack}
    own = sum(1 for name, _ in model.named_parameters() if "." not in name)
    rest = [p for p in order if id(p) not in stacked]
    return [*rest[:own], *stacks, *rest[own:]]
