"""cluster.yaml passes Ray's own config preparation and schema validation (offline), plus what can be
checked here of the path it takes: one node image for every node, with the Ray and Python this project
pins, every command the nodes run provided by that image, durable tracking, least-privilege workers."""

from __future__ import annotations

import copy
import json
import re
import shlex
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tuner.cli.main import _parser as tune_parser

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
CLUSTER_DOC = (ROOT / "docs" / "cluster.md").read_text()  # the cluster guide README links to
# Shell words and tools of the base image's OS (Ubuntu in rayproject/ray), not of our environment.
SHELL = {
    "if",
    "then",
    "fi",
    "else",
    "while",
    "do",
    "done",
    "export",
    "ulimit",
    "nohup",
    "sh",
    "sleep",
    "mkdir",
    "hostname",
    "awk",
    "dirname",
    "[",
    "true",
}
# Our environment: console scripts of this project and its dependencies, and what the image adds.
OURS = {"ray", "mlflow", "wsss", "wsss-tune", "python", "pip", "aws"}


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _block(marker: str) -> str:
    match = re.search(rf"<!-- {marker}:start -->\n```\w+\n(.*?)```\n<!-- {marker}:end -->", CLUSTER_DOC, re.S)
    assert match, f"docs/cluster.md has no {marker} block"
    return match.group(1)


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _commands(raw: dict, *sections: str) -> list[str]:
    return [c for s in sections for c in raw.get(s, [])]


_OPERATORS = {";", "|", "||", "&&", "&", "("}
_REDIRECTS = {">", ">>", "<", ">&", "&>"}
_PREFIXES = {"if", "then", "else", "do", "while", "nohup", "!"}


def _programs(command: str) -> list[str]:
    """The program of every simple command in a shell line (after ;, |, &&, $( and if/then), and
    inside `sh -c '...'`; redirection targets and variable assignments are not programs."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens, programs, expect, skip = list(lexer), [], True, False
    for i, token in enumerate(tokens):
        if skip:
            skip = False
        elif token in _REDIRECTS:
            skip = True
        elif token in _OPERATORS:
            expect = True
        elif expect and not (token in _PREFIXES or re.match(r"\w+=", token)):
            programs.append(token)
            expect = False
            if token == "sh" and tokens[i + 1] == "-c":
                programs += _programs(tokens[i + 2])
    return programs


def test_ray_prepares_and_validates_it(raw: dict) -> None:
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    assert prepared["available_node_types"]["head.cpu"]["max_workers"] == 0


def test_one_image_with_the_pinned_ray_and_python(raw: dict) -> None:
    docker = raw["docker"]
    assert "head_image" not in docker and "worker_image" not in docker  # head and workers alike
    for node_type in raw["available_node_types"].values():
        assert "docker" not in node_type
    assert docker["image"].endswith("/wsss-search:latest") and docker["pull_before_run"]
    base = re.search(r"^FROM rayproject/ray:(\S+)-py(\d)(\d+)-cu(\d+)$", _dockerfile(), re.M)
    assert base, "the node image must build on one of Ray's CUDA images"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert base.group(1) == ray.__version__  # the Ray the tests (and the driver) run
    assert '"ray[tune]==' + ray.__version__ + '"' in (ROOT / "pyproject.toml").read_text()
    python = (int(base.group(2)), int(base.group(3)))
    assert python >= tuple(int(v) for v in pyproject["requires-python"].removeprefix(">=").split("."))
    assert f"ray:{ray.__version__}-py{python[0]}{python[1]}-cu{base.group(4)}" in CLUSTER_YAML.read_text()
    assert f"ray[tune]=={ray.__version__}" in _dockerfile()  # pip may not move Ray off the image's
    assert "docker build -t YOUR-ACCOUNT.dkr.ecr.us-west-2.amazonaws.com/wsss-search:latest ." in _block(
        "node-image"
    )


def test_the_image_pins_what_the_tests_run_on() -> None:
    """torch, torchvision and MLflow at the versions installed here (what CI tests); the driver the
    docs ask of the AMI covers the CUDA runtime that torch wheel carries."""
    import mlflow
    import torch
    import torchvision

    for name, version in (("torch", torch.__version__), ("torchvision", torchvision.__version__)):
        pinned = re.search(rf'"{name}==(\d+)\.(\d+)\.\d+"', _dockerfile())
        assert pinned, f"the Dockerfile pins no exact {name}"
        # The release line the tests run on (a registry may have a newer patch than the image).
        assert tuple(map(int, pinned.groups())) == tuple(map(int, version.split(".")[:2])), name
    assert f'"mlflow=={mlflow.__version__}"' in _dockerfile()
    assert f'"mlflow=={mlflow.__version__}"' in (ROOT / "pyproject.toml").read_text()  # laptops too
    cuda_major = int(torch.version.cuda.split(".")[0]) if torch.version.cuda else 13
    minimum = {12: 525, 13: 580}[cuda_major]  # NVIDIA's minimum driver for a CUDA major release
    assert f"driver >= {minimum}" in CLUSTER_DOC and f"CUDA {torch.version.cuda}" in CLUSTER_DOC


def test_the_build_context_leaves_out_history_environments_and_data() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "venv", "tests", "docs", "mlruns", "*.db", "**/__pycache__"} <= ignored
    assert not {"wsss", "tuner", "search_spaces", "pyproject.toml", "README.md"} & ignored  # the install


def test_both_node_types_boot_a_pinned_gpu_ami(raw: dict) -> None:
    """An explicit ImageId on each node type, so Ray does not fill in its default Deep Learning AMI
    (Ubuntu 18.04, CUDA 11); the docs say which image and how to find its id."""
    prepared = prepare_config(copy.deepcopy(raw))
    for name, node_type in prepared["available_node_types"].items():
        assert node_type["node_config"]["ImageId"] == "YOUR-GPU-AMI", name
    assert "base-oss-nvidia-driver-gpu-ubuntu-22.04" in CLUSTER_DOC and "YOUR-GPU-AMI" in CLUSTER_DOC


def test_the_head_has_a_role_of_its_own(raw: dict) -> None:
    head = raw["available_node_types"]["head.cpu"]["node_config"]
    assert head["IamInstanceProfile"] == {"Arn": "arn:aws:iam::YOUR-ACCOUNT:instance-profile/wsss-head"}
    policy = json.loads(_block("head-policy"))
    passed = [s["Resource"] for s in policy["Statement"] if s["Action"] == ["iam:PassRole"]]
    assert passed == [["arn:aws:iam::YOUR-ACCOUNT:role/wsss-worker"]]


def test_nodes_install_nothing_when_they_boot(raw: dict) -> None:
    boot = " ".join(_commands(raw, "setup_commands", "head_setup_commands", "worker_setup_commands"))
    assert "pip install" not in boot and "file_mounts" not in raw
    installs = _dockerfile()
    assert (
        "/home/ray/wsss-search[crf,pretrained]" in installs and "COPY" in installs
    )  # the project, in the image
    assert "awscli" in installs and "psycopg2-binary" in installs  # the AWS CLI and Postgres driver


def test_every_command_the_nodes_run_exists_in_the_image(raw: dict) -> None:
    """Commands inside the container: our environment's console scripts (checked to exist here, where
    the project is installed as in the image) or the base OS's shell tools."""
    inside = _commands(
        raw,
        "setup_commands",
        "head_setup_commands",
        "worker_setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    )
    programs = {p for command in inside for p in _programs(command)}
    assert {"ray", "mlflow", "wsss-tune", "aws"} <= programs
    assert programs <= SHELL | OURS, programs - SHELL - OURS
    scripts = Path(sys.executable).parent
    for program in programs & (OURS - {"aws"}):  # aws comes from the image's awscli
        assert (scripts / program).exists(), f"{program} is not installed with the project"
    host = {p for command in raw["initialization_commands"] for p in _programs(command)}
    assert host == {"aws", "docker"}  # the AMI's tools, outside the container


def test_the_tuner_accepts_the_commands_cluster_yaml_gives_it(
    raw: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    head_env = dict(
        o.removeprefix("--env ").split("=", 1) for o in raw["docker"]["head_run_options"] if "--env" in o
    )
    for name, value in head_env.items():
        monkeypatch.setenv(name, value)
    started = " ".join(raw["head_start_ray_commands"])
    commands = [
        c for line in raw["head_start_ray_commands"] for c in re.findall(r"wsss-tune ([a-z][^;'&>]*)", line)
    ]
    for command in commands:
        args = tune_parser().parse_args(shlex.split(command))
        if args.db_command == "wait":  # the server every shell on the head uses
            assert args.uri == head_env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
            continue
        assert args.db == Path(head_env["WSSS_MLFLOW_DB"]) and args.remote == head_env["WSSS_MLFLOW_BACKUP"]
    assert "wsss-tune db restore --missing-ok" in started and "wsss-tune db backup" in started


def test_durable_tracking_and_network_rules(raw: dict) -> None:
    head = " ".join(raw["head_start_ray_commands"])
    workers = " ".join(raw["worker_start_ray_commands"])
    assert "ray start --head" in head and "--num-gpus=0" in head  # no trial lands on the CPU head
    gpu = raw["available_node_types"]["gpu.worker"]
    assert gpu["min_workers"] == 0 and gpu["resources"]["GPU"] >= 1  # GPU workers autoscale from zero
    assert re.search(r"mlflow server .*--serve-artifacts", head) and "--artifacts-destination s3://" in head
    assert '--backend-store-uri "${WSSS_MLFLOW_BACKEND:-sqlite:///$WSSS_MLFLOW_DB}"' in head
    assert head.index("wsss-tune db restore") < head.index("mlflow db upgrade") < head.index("mlflow server")
    assert head.index("mlflow server") < head.index("wsss-tune db wait --timeout 120 --log ~/mlflow.log")
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in workers
    # Every shell on the head (ray exec, job drivers) reaches the server, not only `ray start`'s.
    assert "--env MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in raw["docker"]["head_run_options"]
    assert "aws s3 sync s3://YOUR-BUCKET/data /data" in " ".join(raw["setup_commands"])


def test_workers_get_the_storage_bucket_and_nothing_else(raw: dict) -> None:
    profile = raw["available_node_types"]["gpu.worker"]["node_config"]["IamInstanceProfile"]
    assert profile == {"Arn": "arn:aws:iam::YOUR-ACCOUNT:instance-profile/wsss-worker"}
    assert "ray-autoscaler" not in json.dumps(profile)
    policy = json.loads(_block("worker-policy"))
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert all(a.startswith(("s3:", "ecr:")) for a in actions) and not any("*" in a for a in actions)
    for statement in policy["Statement"]:
        for resource in statement["Resource"]:
            if statement["Action"][0].startswith("s3:"):
                assert resource.startswith("arn:aws:s3:::YOUR-BUCKET")
            elif resource != "*":
                assert resource == "arn:aws:ecr:us-west-2:YOUR-ACCOUNT:repository/wsss-search"
    star = [s for s in policy["Statement"] if s["Resource"] == ["*"]]
    assert [s["Action"] for s in star] == [["ecr:GetAuthorizationToken"]]  # AWS offers no narrower scope
    listing = [s for s in policy["Statement"] if s["Action"] == ["s3:ListBucket"]]
    assert listing == [
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::YOUR-BUCKET"]}
    ]


def test_validation_catches_mistakes(raw: dict) -> None:
    broken = copy.deepcopy(raw)
    broken["available_node_types"]["gpu.worker"]["resources"]["GPU"] = 0.5  # cluster resources are integers
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))
    typo = copy.deepcopy(raw)
    typo["available_node_types"]["gpu.worker"]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(typo))


def _head_env(raw: dict) -> dict[str, str]:
    options = raw["docker"]["head_run_options"]
    return dict(o.removeprefix("--env ").split("=", 1) for o in options if o.startswith("--env "))


def test_spot_workers_fall_back_to_on_demand_while_spot_launches_fail(
    raw: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray's own scheduling step (get_nodes_for) with the scorer cluster.yaml gives the autoscaler."""
    import functools
    import time

    from ray.autoscaler._private.loader import load_function_or_class
    from ray.autoscaler._private.node_provider_availability_tracker import (
        NodeAvailabilityRecord,
        NodeAvailabilitySummary,
        UnavailableNodeInformation,
    )
    from ray.autoscaler._private.resource_demand_scheduler import get_nodes_for

    env = _head_env(raw)
    monkeypatch.setenv("WSSS_NODE_PREFERENCE", env["WSSS_NODE_PREFERENCE"])
    scorer = load_function_or_class(env["RAY_AUTOSCALER_UTILIZATION_SCORER"])
    node_types = prepare_config(copy.deepcopy(raw))["available_node_types"]
    assert "InstanceMarketOptions" not in node_types["gpu.ondemand"]["node_config"]
    trials = [{"CPU": 8, "GPU": 1}] * 3

    def launched(summary: dict) -> dict[str, int]:
        score = functools.partial(scorer, node_availability_summary=NodeAvailabilitySummary(summary))
        return dict(get_nodes_for(node_types, {}, "head.cpu", 8, trials, score)[0])

    assert launched({}) == {"gpu.worker": 3}  # spot first
    no_capacity = NodeAvailabilityRecord(
        "gpu.worker", False, time.time(), UnavailableNodeInformation("InsufficientInstanceCapacity", "spot")
    )
    # On demand up to its cap; what is left is asked of spot again, which may have capacity by then.
    assert launched({"gpu.worker": no_capacity}) == {"gpu.ondemand": 2, "gpu.worker": 1}


def test_spot_workers_watch_for_interruption_notices(raw: dict) -> None:
    (line,) = [c for c in raw["worker_start_ray_commands"] if "spot-watch" in c]
    command = re.search(r"wsss-tune (spot-watch[^>&]*)", line).group(1)
    args = tune_parser().parse_args(shlex.split(command))
    assert args.address == "$RAY_HEAD_IP:6379" and args.node_id is None  # this host's node
    assert line.startswith("nohup ") and line.rstrip().endswith("&")  # beside ray start, not blocking it
    starts = raw["worker_start_ray_commands"]
    assert starts.index(line) > next(i for i, c in enumerate(starts) if "ray start" in c)
