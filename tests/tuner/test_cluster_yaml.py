"""cluster.yaml passes Ray's own config preparation and schema validation (offline), plus our rules."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_ray_prepares_and_validates_it(raw: dict) -> None:
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    assert prepared["available_node_types"]["head.cpu"]["max_workers"] == 0


def test_our_rules(raw: dict) -> None:
    head = " ".join(raw["head_start_ray_commands"])
    workers = " ".join(raw["worker_start_ray_commands"])
    assert "ray start --head" in head and "--num-gpus=0" in head  # no trial lands on the CPU head
    gpu = raw["available_node_types"]["gpu.worker"]
    assert gpu["min_workers"] == 0 and gpu["resources"]["GPU"] >= 1  # GPU workers autoscale from zero
    assert re.search(r"mlflow server .*--serve-artifacts", head) and "--artifacts-destination s3://" in head
    assert "--backend-store-uri sqlite:////" in head  # an absolute database path, never a file store
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in workers
    assert "MLFLOW_TRACKING_URI=" in head
    setup = " ".join(raw["setup_commands"])
    assert "pip install -q -e ~/wsss-search" in setup and raw["file_mounts"]["~/wsss-search"] == "."
    assert "IamInstanceProfile" in gpu["node_config"]  # workers reach the S3 stage store


def test_validation_catches_mistakes(raw: dict) -> None:
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu.worker"]["resources"]["GPU"] = 0.5  # cluster resources are integers
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
    typo = copy.deepcopy(raw)
    typo["available_node_types"]["gpu.worker"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(typo))
