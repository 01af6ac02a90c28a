"""Helpers the tests share (conftest.py holds only fixtures): the tiny pipeline config and dataset spec,
and the moto S3 URI form."""

from __future__ import annotations

from wsss.config import PipelineConfig
from wsss.config_load import load_config
from wsss.data.synth import SynthSpec

# Every stage trains one short epoch on 48 px crops of 64 px images with the tiny timm test backbone.
TINY = [
    "seed.train.epochs=1",
    "seed.train.batch_size=4",
    "seed.train.crop_size=48",
    "seed.train.resize_long=[48,64]",
    "seed.scales=[1.0,0.5]",
    "refine.train.epochs=1",
    "refine.train.batch_size=4",
    "refine.train.crop_size=48",
    "refine.train.resize_long=[48,64]",
    "refine.logt=2",
    "segment.train.epochs=1",
    "segment.train.batch_size=4",
    "segment.train.crop_size=48",
    "segment.train.resize_long=[48,64]",
    "segment.aspp_rates=[2,4]",
    "runtime.progress=false",
    "runtime.threads=1",
]
TINY_SPEC = SynthSpec(train=12, val=6, size=64, classes=3, seed=7)


def tiny_config(*extra: str) -> PipelineConfig:
    return load_config(None, [*TINY, *extra])


def s3_uri(endpoint: str, path: str) -> str:
    """An s3:// URI on the moto server that pyarrow (and so the stage store and Ray Tune) can open."""
    return f"s3://{path}?endpoint_override={endpoint}&scheme=http&region=us-east-1&allow_bucket_creation=true"
