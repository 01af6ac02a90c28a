from __future__ import annotations

import sys

import numpy as np
import pytest

from wsss.config import CrfConfig
from wsss.errors import MissingExtraError
from wsss.ops.crf import crf_refine, require_crf


def test_clear_message_when_the_extra_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(
        MissingExtraError, match=r"refine\.crf\.enabled=true needs the dense CRF from the `crf` extra"
    ):
        require_crf("refine.crf.enabled")


def test_crf_snaps_labels_to_image_edges() -> None:
    pytest.importorskip("pydensecrf.densecrf")
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, 16:] = 255  # a sharp vertical edge at column 16
    probs = np.zeros((2, 32, 32), np.float32)
    probs[1, :, 12:] = 0.6  # class 1 believed to start 4 pixels early
    probs[0] = 1.0 - probs[1]
    refined = crf_refine(image, probs, CrfConfig(enabled=True), "refine.crf.enabled")
    assert refined.shape == probs.shape
    labels = refined.argmax(0)
    assert (labels[:, 17:] == 1).all() and (labels[:, :15] == 0).all()
