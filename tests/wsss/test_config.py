from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wsss.config import PipelineConfig
from wsss.config_load import config_source, dump_config, load_config, preset_names
from wsss.configio import digest, field_paths, to_mapping, with_setting
from wsss.errors import ConfigError
from wsss.yamlio import load_yaml


def test_defaults_are_frozen_and_typed() -> None:
    cfg = load_config()
    assert isinstance(cfg, PipelineConfig)
    assert cfg.seed.scales == (1.0, 0.5, 1.5, 2.0)
    with pytest.raises(AttributeError):
        cfg.seed.bg_threshold = 0.3  # type: ignore[misc]


def test_set_overrides_parse_yaml_values() -> None:
    cfg = load_config(
        None, ["seed.train.lr=0.01", "seed.scales=[1.0, 2.0]", "refine.crf.enabled=true", "rng_seed=3"]
    )
    assert cfg.seed.train.lr == 0.01
    assert cfg.seed.scales == (1.0, 2.0)
    assert cfg.refine.crf.enabled is True
    assert cfg.rng_seed == 3


def test_partial_section_keeps_the_stage_defaults() -> None:
    """Overriding seed.train.lr must keep the seed stage's own epochs, not TrainConfig's class default."""
    default = load_config()
    cfg = load_config(None, ["seed.train.lr=0.2"])
    assert cfg.seed.train.epochs == default.seed.train.epochs
    assert cfg.refine.train == default.refine.train


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed.train.lrr=0.1", "seed.train.lrr: unknown key; did you mean 'seed.train.lr'?"),
        ("sed.method=cam", "sed: unknown key; did you mean 'seed'?"),
        ("seed.train.epochs=1.5", "seed.train.epochs: expected an integer, got 1.5 (float)"),
        ("seed.train.epochs=true", "seed.train.epochs: expected an integer, got True (bool)"),
        ("seed.train.lr=fast", "seed.train.lr: expected a number, got 'fast' (str)"),
        ("seed.flip=1", "seed.flip: expected true or false, got 1 (int)"),
        ("seed.scales=1.0", "seed.scales: expected a list, got 1.0 (float)"),
        ("seed.scales=[1.0, x]", "seed.scales[1]: expected a number, got 'x' (str)"),
        ("seed.train.resize_long=[1,2,3]", "seed.train.resize_long: expected a list of 2 values, got 3"),
        ("data.mask_dir=Masks", "data.mask_dir: 'Masks' is not one of"),
        ("seed.method=nope", "seed.method: unknown method 'nope'"),
        ("seed.backbone.output_stride=32", "seed.backbone.output_stride: must be 8 or 16, got 32"),
        ("refine.alpha_high=2", "refine.alpha_high: must be > alpha_low"),
        ("seed.train=3", "seed.train: expected a mapping of TrainConfig fields, got 3 (int)"),
        ("seed.train.lr.x=3", "seed.train.lr.x"),
        ("data.synthetic.size=10", "data.synthetic.size: must be within 48..2048"),
    ],
)
def test_bad_values_name_the_dotted_path(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_set_without_equals_is_an_error() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(None, ["seed.train.lr"])


def test_yaml_file_is_loaded_strictly_and_named_in_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("seed:\n  train:\n    lr: 0.03\nrefine:\n  beta: 10\n")
    cfg = load_config(good, ["refine.beta=12"])
    assert cfg.seed.train.lr == 0.03
    assert cfg.refine.beta == 12.0  # --set wins over the file

    bad = tmp_path / "bad.yaml"
    bad.write_text("refine:\n  betta: 10\n")
    with pytest.raises(
        ConfigError, match=r"bad\.yaml: refine\.betta: unknown key; did you mean 'refine\.beta'"
    ):
        load_config(bad)

    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: line \d+ invalid YAML"):
        load_config(broken)

    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)

    with pytest.raises(ConfigError, match="no such config file or preset"):
        load_config(tmp_path / "missing.yaml")


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, ["seed.train.lr=0.07", "segment.scales=[0.5, 1.0]"])
    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert yaml.safe_load(path.read_text())["segment"]["scales"] == [0.5, 1.0]


def test_presets_load() -> None:
    assert "voc12" in preset_names()
    cfg = load_config("voc12")
    assert cfg.seed.backbone.name == "resnet50" and cfg.seed.backbone.pretrained
    assert cfg.data.mask_dir == "SegmentationClassAug"


def test_voc12_preset_is_what_its_references_ran() -> None:
    """irn's CAM net, psa's AffinityNet with CRF confident labels, the papers' evaluation protocol."""
    cfg = load_config("voc12")
    # Train on train_aug, score CAMs and pseudo masks on VOC train 1,464 against SegmentationClass.
    assert (cfg.data.train_split, cfg.data.eval_split) == ("train_aug", "train")
    assert cfg.data.score_mask_dir == "SegmentationClass" and cfg.data.mask_dir == "SegmentationClassAug"
    # irn: ResNet-50 OS16, conv1..layer2 frozen, 5 epochs, lr 0.1, wd 1e-4, crop 512 after 320-640.
    seed = cfg.seed
    assert (seed.backbone.output_stride, seed.backbone.frozen_stages, seed.backbone.frozen_bn) == (
        16,
        3,
        True,
    )
    assert (seed.train.epochs, seed.train.lr, seed.train.weight_decay) == (5, 0.1, 1e-4)
    assert (seed.train.crop_size, seed.train.resize_long, seed.train.color_jitter) == (
        512,
        (320, 640),
        (0,) * 4,
    )
    assert seed.bg_threshold == 0.15 and seed.scales == (1.0, 0.5, 1.5, 2.0)
    # psa: CRF confident labels at alpha 4 / 32, crop and flip only, its pairs, beta 8, logt 8, alpha 16.
    refine = cfg.refine
    assert refine.crf.enabled and (refine.alpha_low, refine.alpha_high) == (4.0, 32.0)
    assert not refine.train.random_rescale and refine.train.crop_size == 448
    assert (refine.train.epochs, refine.train.batch_size, refine.train.lr) == (8, 8, 0.1)
    assert (refine.pair_origins, refine.grid_labels) == ("psa", "psa")
    assert (refine.beta, refine.logt, refine.rw_alpha, refine.radius) == (8.0, 8, 16.0, 5)
    # kazuto1011's schedule (20k iterations at batch 10 ~ 19 epochs of 10,582), no colour jitter.
    segment = cfg.segment
    assert (segment.train.lr, segment.train.batch_size, segment.train.crop_size) == (2.5e-4, 10, 321)
    assert segment.train.color_jitter == (0,) * 4 and segment.balanced_ce


def test_voc12_preset_lists_its_departures() -> None:
    from importlib import resources

    text = resources.files("wsss.presets").joinpath("voc12.yaml").read_text()
    header = text.split("\ndata:")[0]
    for topic in ("ResNet-38", "momentum", "balanced CE", "BGR mean", "CRF post-processing", "sparse"):
        assert topic in header, topic


def test_digest_is_stable_and_sensitive() -> None:
    a, b = load_config(), load_config()
    assert digest(a.refine) == digest(b.refine)
    assert digest(a.refine) != digest(load_config(None, ["refine.beta=9"]).refine)
    assert to_mapping(a)["seed"]["scales"] == [1.0, 0.5, 1.5, 2.0]


def test_field_paths_lists_every_leaf() -> None:
    paths = field_paths(PipelineConfig)
    assert "seed.train.lr" in paths and paths["seed.train.lr"] is float
    assert "refine.crf.bilateral_srgb" in paths
    assert "seed.train" not in paths


def test_provenance_block_is_carried_not_configured(tmp_path: Path) -> None:
    path = tmp_path / "best.yaml"
    path.write_text("provenance: {experiment: demo, run_id: abc, val_miou: 0.5}\nrefine:\n  beta: 9\n")
    assert load_config(path).refine.beta == 9.0
    path.write_text("provenance: 3\n")
    with pytest.raises(ConfigError, match="provenance must be a mapping"):
        load_config(path)


def test_exponent_numbers_without_a_dot_are_numbers(tmp_path: Path) -> None:
    """PyYAML (YAML 1.1) reads `1e-5` as a string; configs, --set and space files read it as a number."""
    assert load_config(None, ["seed.train.lr=1e-5"]).seed.train.lr == 1e-5
    path = tmp_path / "c.yaml"
    path.write_text("seed:\n  train:\n    weight_decay: 5e-4\n")
    assert load_config(path).seed.train.weight_decay == 5e-4


def test_method_params_follow_the_method(tmp_path: Path) -> None:
    cfg = load_config(None, ["seed.method=mixup", "seed.params.alpha=0.5"])
    assert type(cfg.seed.params).__name__ == "MixupConfig" and cfg.seed.params.alpha == 0.5
    assert load_config(None, ["seed.method=fmix"]).seed.params.decay_power == 3.0  # the method's defaults
    with pytest.raises(ConfigError, match=r"seed\.params\.alpha: unknown key; NoParams has no settings"):
        load_config(None, ["seed.params.alpha=0.5"])  # cam has no knobs of its own
    with pytest.raises(
        ConfigError, match=r"seed\.params\.alpah: unknown key; did you mean 'seed\.params\.alpha'"
    ):
        load_config(None, ["seed.method=mixup", "seed.params.alpah=0.5"])
    with pytest.raises(ConfigError, match=r"seed\.params\.alpha: must be > 0"):
        load_config(None, ["seed.method=mixup", "seed.params.alpha=0"])
    path = tmp_path / "m.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert digest(cfg.seed) != digest(load_config(None, ["seed.method=mixup"]).seed)


def test_a_presets_per_method_settings_apply_to_the_method_a_run_picks() -> None:
    teach = load_config("voc12", ["seed.method=sc_teach"]).seed
    assert (teach.params.teacher, teach.params.teacher_pretrained, teach.params.teacher_size) == (
        "vit_base_patch16_224",
        True,
        224,
    )
    assert teach.backbone.dropout == 0.5  # mva-wsss's dropout7
    explicit = load_config("voc12", ["seed.method=sc_teach", "seed.params.teacher_epochs=7"]).seed.params
    assert explicit.teacher_epochs == 7 and explicit.teacher == "vit_base_patch16_224"
    cam = load_config("voc12").seed  # irn's CAM schedule
    assert to_mapping(cam.params) == {}  # cam has no knobs; sc_teach's stay unused
    assert (cam.backbone.output_stride, cam.train.lr, cam.train.epochs, cam.backbone.dropout) == (
        16,
        0.1,
        5,
        0,
    )
    assert load_config("voc12", ["seed.method=sc_cam"]).seed.params.clusters == 10


@pytest.mark.parametrize(
    ("method", "expected"),
    [  # (output stride, lr, epochs, batch, crop, resize, dropout): train_SEAM.py, train_cpn.py, train_cls.py
        ("seam", (8, 0.01, 8, 8, 448, (448, 768), 0.5)),
        ("cpn", (8, 0.01, 8, 4, 448, (448, 768), 0.5)),
        ("sc_cam", (8, 0.01, 30, 16, 224, (256, 512), 0.5)),
    ],
)
def test_voc12_runs_seam_cpn_and_sc_cam_on_their_references_schedules(method: str, expected: tuple) -> None:
    seed = load_config("voc12", [f"seed.method={method}"]).seed
    train, backbone = seed.train, seed.backbone
    got = (backbone.output_stride, train.lr, train.epochs, train.batch_size, train.crop_size)
    assert (*got, train.resize_long, backbone.dropout) == expected
    assert backbone.name == "resnet50" and backbone.pretrained and backbone.frozen_bn  # the rest stays
    assert seed.scales == (1.0, 0.5, 1.5, 2.0) and seed.bg_threshold == 0.15
    # the command line and a search's overrides still win over the preset's per-method settings
    assert load_config("voc12", [f"seed.method={method}", "seed.train.lr=0.05"]).seed.train.lr == 0.05


def test_per_method_settings_are_checked_for_every_method(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    cases = [
        ({"seed": {"by_method": {"sc_teach": 3}}}, r"seed\.by_method must map method names"),
        ({"seed": {"by_method": {"nosuch": {}}}}, r"seed\.by_method\.nosuch: unknown method"),
        (
            {"seed": {"by_method": {"seam": {"train": {"nope": 1}}}}},
            r"seed\.by_method\.seam: seed\.train\.nope",
        ),
        ({"seed": {"by_method": {"seam": {"method": "cam"}}}}, r"seed\.by_method\.seam: holds seed settings"),
        ({"seed": {"by_method": {"sc_teach": {"params": {"nope": 1}}}}}, "nope"),
        ({"seed": {"params_by_method": {"sc_teach": {}}}}, r"seed\.params_by_method is now seed\.by_method"),
    ]
    for data, message in cases:
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError, match=message):
            load_config(path)  # the typo is in a method this run does not pick (cam)
        with pytest.raises(ConfigError, match=message):
            config_source(path)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("refine.beta", 9.0),
        ("seed.train.lr", 0.02),
        ("seed.params.alpha", 0.7),
        ("segment.scales", [1.0, 0.5]),
    ],
)
def test_one_setting_checked_alone_equals_a_full_load(key: str, value: object) -> None:
    base = load_config(None, ["seed.method=mixup"])
    assert with_setting(base, key, value) == load_config(None, ["seed.method=mixup", f"{key}={value}"])


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("refine.alpha_high", 1.0, "refine.alpha_high: must be > alpha_low"),
        ("refine.backbone.dropout", 0.5, "refine.backbone.dropout: only the CAM network pools globally"),
        ("seed.train.lrr", 1.0, "seed.train.lrr: unknown key"),
        ("seed.train.lr.x", 1.0, "seed.train.lr: not a section of settings"),
    ],
)
def test_one_setting_checked_alone_is_checked_by_every_section_above_it(
    key: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        with_setting(load_config(), key, value)


def test_yaml_merge_keys_may_override_what_they_merge() -> None:
    """Duplicate keys are refused, but a key after `<<: *anchor` overrides the merged one, as YAML means."""
    text = "defaults: &train {lr: 0.5, epochs: 2}\nseed:\n  train:\n    <<: *train\n    lr: 0.1\n"
    assert load_yaml(text)["seed"]["train"] == {"lr": 0.1, "epochs": 2}
