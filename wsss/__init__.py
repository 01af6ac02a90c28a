"""WSSS pipeline library: data, CAM methods, stages, stage store. This module is the public API.

Heavy modules (torch, timm) load on first use, so `wsss methods` and `wsss config show` stay quick.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "PipelineConfig": "wsss.config",
    "load_config": "wsss.config_load",
    "config_source": "wsss.config_load",
    "dump_config": "wsss.config_load",
    "preset_names": "wsss.config_load",
    "field_paths": "wsss.configio",
    "config_fields": "wsss.config_load",
    "to_mapping": "wsss.configio",
    "with_setting": "wsss.config_load",
    "short_repr": "wsss.errors",
    "load_yaml": "wsss.yamlio",
    "list_methods": "wsss.methods",
    "run_pipeline": "wsss.pipeline",
    "stage_keys": "wsss.pipeline",
    "collect_garbage": "wsss.retention",
    "config_keys": "wsss.retention",
    "describe_collected": "wsss.retention",
    "require_gc_rule": "wsss.retention",
    "prepare_dataset": "wsss.pipeline",
    "default_cache_dir": "wsss.pipeline",
    "PipelineResult": "wsss.pipeline",
    "StageOutcome": "wsss.pipeline",
    "STAGES": "wsss.pipeline",
    "METRIC_STAGE": "wsss.pipeline",
    "open_dataset": "wsss.data.voc",
    "VocDataset": "wsss.data.voc",
    "SynthSpec": "wsss.data.synth",
    "generate_synthetic": "wsss.data.synth",
    "StageStore": "wsss.store",
    "write_stage_report": "wsss.report",
    "PROVENANCE_KEY": "wsss.config_load",
    "RuntimeConfig": "wsss.config",
    "evaluate_masks": "wsss.stages.evaluate",
    "Scores": "wsss.metrics",
    "strict_json": "wsss.metrics",
    "WsssError": "wsss.errors",
    "ConfigError": "wsss.errors",
    "DataError": "wsss.errors",
    "StoreError": "wsss.errors",
    "user_message": "wsss.errors",
    "bounded": "wsss.errors",
    "read_text": "wsss.errors",
    "EnvironmentFault": "wsss.errors",
    "SYNTHETIC_DATA": "wsss.provenance",
}
_RENAMES = {
    "describe_collected": "describe",
    "require_gc_rule": "require_rule",
    "generate_synthetic": "generate",
    "evaluate_masks": "run",
    "SYNTHETIC_DATA": "SYNTHETIC",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'wsss' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), _RENAMES.get(name, name))
    globals()[name] = value
    return value
