"""WSSS pipeline library: data, CAM methods, stages, stage store. This module is the public API.

Heavy modules (torch, timm) load on first use, so `wsss methods` and `wsss config show` stay quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real types for type checkers; at run time each name loads on first use
    from wsss.config import PipelineConfig as PipelineConfig
    from wsss.config import RuntimeConfig as RuntimeConfig
    from wsss.config_load import PROVENANCE_KEY as PROVENANCE_KEY
    from wsss.config_load import config_fields as config_fields
    from wsss.config_load import config_source as config_source
    from wsss.config_load import dump_config as dump_config
    from wsss.config_load import load_config as load_config
    from wsss.config_load import preset_names as preset_names
    from wsss.config_load import with_setting as with_setting
    from wsss.configio import field_paths as field_paths
    from wsss.configio import to_mapping as to_mapping
    from wsss.data.synth import SynthSpec as SynthSpec
    from wsss.data.synth import generate as generate_synthetic  # noqa: F401 (exported under its public name)
    from wsss.data.voc import VocDataset as VocDataset
    from wsss.data.voc import open_dataset as open_dataset
    from wsss.errors import ConfigError as ConfigError
    from wsss.errors import DataError as DataError
    from wsss.errors import EnvironmentFault as EnvironmentFault
    from wsss.errors import StoreError as StoreError
    from wsss.errors import WsssError as WsssError
    from wsss.errors import bounded as bounded
    from wsss.errors import read_text as read_text
    from wsss.errors import short_repr as short_repr
    from wsss.errors import user_message as user_message
    from wsss.methods import list_methods as list_methods
    from wsss.metrics import Scores as Scores
    from wsss.metrics import strict_json as strict_json
    from wsss.pipeline import METRIC_STAGE as METRIC_STAGE
    from wsss.pipeline import STAGES as STAGES
    from wsss.pipeline import PipelineResult as PipelineResult
    from wsss.pipeline import StageOutcome as StageOutcome
    from wsss.pipeline import default_cache_dir as default_cache_dir
    from wsss.pipeline import prepare_dataset as prepare_dataset
    from wsss.pipeline import run_pipeline as run_pipeline
    from wsss.pipeline import stage_keys as stage_keys
    from wsss.provenance import SYNTHETIC as SYNTHETIC_DATA  # noqa: F401 (exported under its public name)
    from wsss.report import write_stage_report as write_stage_report
    from wsss.retention import collect_garbage as collect_garbage
    from wsss.retention import config_keys as config_keys
    from wsss.retention import describe as describe_collected  # noqa: F401 (exported under its public name)
    from wsss.retention import require_rule as require_gc_rule  # noqa: F401 (exported under its public name)
    from wsss.stages.evaluate import run as evaluate_masks  # noqa: F401 (exported under its public name)
    from wsss.store import StageStore as StageStore
    from wsss.yamlio import load_yaml as load_yaml

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
