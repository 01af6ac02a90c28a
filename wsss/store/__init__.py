"""The content-addressed stage store: artifacts published atomically under `<stage>/<key>/` on a local
folder or any pyarrow.fs filesystem (stage_store), node-local copies of remote artifacts (cache),
what killed builds leave behind and its sweeps (debris), and the on-disk layout (layout)."""

from wsss.store.layout import MANIFEST
from wsss.store.stage_store import Artifact, Build, StageStore, stage_key

__all__ = ["MANIFEST", "Artifact", "Build", "StageStore", "stage_key"]
