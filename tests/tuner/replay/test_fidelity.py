"""Rung fidelity, retention, the stage interaction and the noise, on a table built from a known rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.tuner.replay.conftest import SPACES, write_table
from tuner.replay.fidelity import interaction, noise, retention, rung_fidelity
from tuner.replay.pool import Pool


def test_retention_of_a_perfect_and_a_reversed_proxy() -> None:
    true = np.arange(100.0)
    assert retention(true, true, keep=0.1) == 1.0
    assert retention(-true, true, keep=0.5) == 0.0
    assert retention(-true, true, keep=1.0) == 1.0


def test_an_additive_table_has_no_interaction_and_its_proxies_rank_well(table: Path) -> None:
    pool = Pool(table, SPACES)
    shares = interaction(pool)
    assert shares is not None and sum(shares.values()) == pytest.approx(1.0)
    assert shares["interaction"] < 0.05 and shares["upstream"] > shares["segment"]
    fidelity = rung_fidelity(pool, np.random.default_rng(0), boot=200)
    assert fidelity["pseudo -> val"]["spearman"] > 0.95
    assert (
        fidelity["cam -> val"]["ci_low"]
        <= fidelity["cam -> val"]["spearman"]
        <= fidelity["cam -> val"]["ci_high"]
    )
    assert "deeplab@1/full -> val" in fidelity


def test_noise_is_pooled_over_the_repeated_pipelines(table: Path) -> None:
    sd = noise(Pool(table, SPACES))
    assert sd["pipelines"] == 2 and 0 < sd["val"] < 0.05 and sd["pseudo"] == 0.0


def test_a_table_with_one_segment_config_has_no_anova(tmp_path: Path) -> None:
    write_table(tmp_path / "one", segments=1)
    pool = Pool(tmp_path / "one", SPACES)
    assert interaction(pool) is None  # nothing to share the variance with (the msrc table)
    assert rung_fidelity(pool, np.random.default_rng(0), boot=50)["pseudo -> val"]["spearman"] > 0.9
