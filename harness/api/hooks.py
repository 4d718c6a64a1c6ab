"""The hooks every pgolf plugin can implement, and where in a run each one fires.

Pattern from pytest (``src/_pytest/hookspec.py``) and tox 4 (``src/tox/plugin/spec.py``):
prefixed, typed, docstring-only specs, and a typed registry passed to the registration
hook. Single choices (architecture, optimizer, quantizer, compressor, schedule) come from
the submission's config; hooks exist for zero-or-more participants (averaging, late QAT,
pruning, extra exports and report fields) and for discovery. The map below follows
composer's ``core/event.py``: one run, top to bottom, with the hooks (``pg_*``, pluggy) and
the model's extension points (``on_*``, called by the host model, see
`harness.api.protocols.ArchComponent`) where they fire::

    # resolve (harness.pipeline.runner.pipeline)
    pg_register_components(registry)      # each plugin module, when its manager loads it
    pg_configure(run)                     # once per process, config resolved; refuse it here
    # setup: run folder, bundle, data, byte tables
    # train (harness.pipeline.training)
    model = cfg.model.build(vocab_size)   #   attach / layer_route / describe fire here
    optimizer = cfg.optimizer.build(model)
    plugins = [p.build() for p in cfg.plugins]
    pg_train_start(ctx)                   # before compile, DDP and priming
    # (resume: each Stateful plugin's load_state_dict(state) runs here)
    for step in 1..N:                     # the timed loop
        model.on_train_progress(...)      #   late switches (protocols.TrainingProgress)
        model(ids)                        #   on_embed, on_post_embed, on_recycle, on_value,
                                          #   on_qk, on_attn_out, on_skip fire inside every forward
        optimizer.step(...)
        pg_step_end(ctx)                  # once per optimizer step, no host sync
    pg_train_end(ctx)                     # averaging swaps its weights in
    # export (harness.pipeline.export), rank 0
    pg_before_quantize(ctx, state_dict)   # prune or calibrate the float state in place
    quantizer.calibrate(model, data)      # a CalibratedQuantizer only (GPTQ); train batches
    # quantize, compress, write the artifact
    # score (harness.pipeline.scoring): no hook runs
    adapter.start(model, session)         # only with eval.adapter (score-first TTT), then after
    adapter.adapt(chunk)                  #   each scored chunk but the last: scored tokens only
    # report (harness.pipeline.report), rank 0
    pg_report(ctx, record)                # add keys to submission.json, never change one

No hook sees the scorer: BPB, the sliding window and byte counting live in
`harness.pipeline.eval`, `harness.pipeline.bpb` and `harness.pipeline.budget` and cannot be
replaced. Every hook that runs during training takes ``ctx: TrainContext``
(`harness.api.context`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    from harness.api.config import RunConfig
    from harness.api.context import TrainContext
    from harness.api.registry import Registry

PROJECT = "pgolf"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

HOOK_NAMES = (
    "pg_register_components",
    "pg_configure",
    "pg_train_start",
    "pg_step_end",
    "pg_train_end",
    "pg_before_quantize",
    "pg_report",
)


@hookspec
def pg_register_components(registry: Registry) -> None:
    """Add this plugin's components to ``registry``.

    Called once per plugin manager, right after the plugin is registered. Call
    ``registry.register(kind, name, config_cls)`` for each component; the name must be
    the module name (``plugins/optim/muon.py`` registers ``muon``). Must not build
    anything or touch torch state.
    """


@hookspec
def pg_configure(run: RunConfig) -> None:
    """Validate ``run`` before anything is built; raise ``ConfigError`` to refuse it.

    Called once per process after the configuration is resolved (environment variables
    and ``--set`` overrides applied). ``run`` is frozen: plugins may not change it, only
    reject it with a message naming the field and what was expected.
    """


@hookspec
def pg_train_start(ctx: TrainContext) -> None:
    """Called once after the model, optimizers and data loader exist, before compilation.

    Runs before ``torch.compile``, DDP wrapping and the compile-priming steps (which are
    undone afterwards), so anything attached here is compiled in. Plugins may keep
    references to ``ctx.model`` (an EMA shadow copy) and attach parametrizations or buffers
    (late QAT, whose on/off switch must be a tensor so compilation does not bake it), but
    must not change parameter values.
    """


@hookspec
def pg_step_end(ctx: TrainContext) -> None:
    """Called once per optimizer step (never per micro-batch), after ``optimizer.step``.

    ``ctx.step`` is the 1-based step just finished and ``ctx.lr_scale`` the multiplier it
    used. Implementations must not force a host-device sync (no ``.item()``): this runs
    inside the timed training loop.
    """


@hookspec
def pg_train_end(ctx: TrainContext) -> None:
    """Called once when training stops, before the final validation and export.

    Averaging plugins swap their weights into ``ctx.model`` here and say so with
    ``ctx.log``; whatever the model holds afterwards is what gets evaluated and exported.
    """


@hookspec
def pg_before_quantize(ctx: TrainContext, state_dict: dict[str, Any]) -> None:
    """Called with the float state dict right before quantization (rank 0 only).

    Calibration or pruning plugins may modify tensors of ``state_dict`` in place. They may
    not read validation data: ``ctx.calibration`` supplies training batches (train shards
    only; asking it for validation data raises ``ConfigError``). A plugin that reads it names
    ``harness.api.by_name.CALIBRATION_MODULE`` in its config's ``modules_by_name()``: a shipped
    file without that module leaves ``ctx.calibration`` None.
    """


@hookspec
def pg_report(ctx: TrainContext, record: dict[str, Any]) -> None:
    """Add extra fields to the result record before ``submission.json`` is written.

    Plugins may only add new keys: the harness refuses a report that changes a key it
    owns (scores, bytes, timings, fingerprints).
    """
