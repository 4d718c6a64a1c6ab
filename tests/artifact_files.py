"""Write an artifact as the export phase does (`harness.pipeline.export`): each component under its
registry name with its config stored as JSON, so a test's file can be loaded back through the
registry like a run's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.api.protocols import QTensor
from harness.pipeline.artifact import ArtifactInfo, config_to_json, write_artifact


def write_with_configs(
    path: Path,
    tensors: dict[str, QTensor],
    quantizer: tuple[str, Any],
    compressor: tuple[str, Any],
    extras: dict | None = None,
) -> ArtifactInfo:
    """``write_artifact`` of ``tensors``; ``quantizer`` and ``compressor`` are (registry name,
    config) pairs, and the compressor is built from its config."""
    (qname, qcfg), (cname, ccfg) = quantizer, compressor
    return write_artifact(
        path,
        tensors,
        quantizer_name=qname,
        quantizer_config=config_to_json(qcfg),
        compressor=ccfg.build(),
        compressor_name=cname,
        compressor_config=config_to_json(ccfg),
        extras=extras,
    )
