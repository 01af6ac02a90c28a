"""The IAM policies of docs/cluster.md evaluated on the S3 requests this project really sends (cluster-
review.md A2): a stage built, looked up and downloaded by a trial, the tracking database backed up and
restored by the head, all through pyarrow against a real S3 API (moto's server) that records them.

The worker policy that gave s3:ListBucket only with an `s3:prefix` condition denied pyarrow's bucket
probe (HeadBucket carries no prefix), so every trial failed to open the store: checked here too.
"""

from __future__ import annotations

import copy
import json
import re
import sqlite3
import urllib.request
from pathlib import Path

import pyarrow.fs as pafs
import pytest

import wsss
from tests.helpers import TINY, s3_uri
from tests.tuner.iam import Request, allowed, s3_requests
from tuner.tracking.backup import backup, restore

DOC = (Path(__file__).resolve().parents[2] / "docs" / "cluster.md").read_text()
BUCKET = "policy-check"


def _policy(marker: str) -> dict:
    found = re.search(rf"<!-- {marker}:start -->\n```json\n(.*?)```\n<!-- {marker}:end -->", DOC, re.S)
    assert found, f"docs/cluster.md has no {marker} block"
    return json.loads(found.group(1))


def _recorder(endpoint: str, command: str) -> bytes:
    method = "GET" if command == "download-recording" else "POST"
    request = urllib.request.Request(f"http://{endpoint}/moto-api/recorder/{command}", method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def _record(endpoint: str, work: object) -> list[Request]:
    _recorder(endpoint, "reset-recording")
    _recorder(endpoint, "start-recording")
    try:
        work()  # type: ignore[operator]
    finally:
        _recorder(endpoint, "stop-recording")
    lines = _recorder(endpoint, "download-recording").decode().splitlines()
    return s3_requests([json.loads(line) for line in lines if line.strip()], "YOUR-BUCKET")


@pytest.fixture(scope="module")
def recorded(
    s3_endpoint: str, tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[Request]]:
    """(who, the IAM view of the S3 requests it sent) for a trial's and the head's store work."""
    tmp = tmp_path_factory.mktemp("policies")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)  # moto writes its recording to ./moto_recording
        pafs.S3FileSystem(
            endpoint_override=s3_endpoint, scheme="http", region="us-east-1", allow_bucket_creation=True
        ).create_dir(BUCKET)  # the bucket exists before the cluster does
        store_uri = s3_uri(s3_endpoint, f"{BUCKET}/wsss/store").replace("&allow_bucket_creation=true", "")
        cfg = wsss.load_config(None, TINY)
        data = wsss.prepare_dataset(cfg, str(tiny_data_dir), tmp / "cache")

        def trial() -> None:
            store = wsss.StageStore(store_uri, cache_dir=tmp / "node-a")
            wsss.run_pipeline(cfg, data, store, until="seed")  # looks up, misses, builds, publishes
            other = wsss.StageStore(store_uri, cache_dir=tmp / "node-b")  # another node reuses it
            wsss.run_pipeline(cfg, data, other, until="seed")  # finds it stored, downloads it

        def head() -> None:
            db = tmp / "mlflow.db"
            with sqlite3.connect(db) as conn:
                for table in ("experiments", "runs", "alembic_version"):  # what a backup is checked for
                    conn.execute(f"create table {table} (id int)")
            remote = s3_uri(s3_endpoint, f"{BUCKET}/wsss/mlflow.db").replace(
                "&allow_bucket_creation=true", ""
            )
            backup(db, remote)
            restore(remote, tmp / "restored.db")

        return {"trial": _record(s3_endpoint, trial), "head": _record(s3_endpoint, head)}


def test_the_recording_holds_what_the_review_found(recorded: dict[str, list[Request]]) -> None:
    trial = recorded["trial"]
    probes = [r for r in trial if r.action == "s3:ListBucket" and not r.context]
    assert probes, "pyarrow sent no bucket probe: the recording or the model has gone wrong"
    assert any(r.action == "s3:PutObject" and "/wsss/store/seed/" in r.resource for r in trial)
    assert any(r.action == "s3:GetObject" and "/wsss/store/seed/" in r.resource for r in trial)


@pytest.mark.parametrize(
    ("policy", "who"), [("worker-policy", "trial"), ("head-policy", "trial"), ("head-policy", "head")]
)
def test_every_request_is_allowed(recorded: dict[str, list[Request]], policy: str, who: str) -> None:
    denied = [str(r) for r in recorded[who] if not allowed(_policy(policy), r)]
    assert not denied, f"{policy} denies what a {who} sends: {denied[:5]}"


def test_the_old_prefix_condition_denied_the_bucket_probe(recorded: dict[str, list[Request]]) -> None:
    old = copy.deepcopy(_policy("worker-policy"))
    for statement in old["Statement"]:
        if statement["Action"] == ["s3:ListBucket"]:
            statement["Condition"] = {"StringLike": {"s3:prefix": ["wsss/*", "data/*"]}}
    denied = {r.sent.split()[0] for r in recorded["trial"] if not allowed(old, r)}
    assert denied == {"HEAD"}  # HeadBucket, pyarrow's probe when it opens the store


def test_the_worker_can_touch_nothing_else() -> None:
    worker = _policy("worker-policy")
    for request in (
        Request("s3:PutObject", "arn:aws:s3:::YOUR-BUCKET/data/VOC2012/JPEGImages/x.jpg"),  # the dataset
        Request("s3:GetObject", "arn:aws:s3:::OTHER-BUCKET/wsss/store/x"),
        Request("s3:ListBucket", "arn:aws:s3:::OTHER-BUCKET"),
        Request("ec2:RunInstances", "*"),
        Request("iam:PassRole", "arn:aws:iam::YOUR-ACCOUNT:role/wsss-worker"),
    ):
        assert not allowed(worker, request), request


def test_the_head_launches_workers_with_their_role_only() -> None:
    head = _policy("head-policy")
    for action in ("ec2:RunInstances", "ec2:CreateTags", "ec2:DescribeInstances", "ec2:TerminateInstances"):
        assert allowed(head, Request(action, "arn:aws:ec2:us-west-2:YOUR-ACCOUNT:instance/i-0123"))
    assert allowed(head, Request("iam:PassRole", "arn:aws:iam::YOUR-ACCOUNT:role/wsss-worker"))
    assert not allowed(head, Request("iam:PassRole", "arn:aws:iam::YOUR-ACCOUNT:role/admin"))
    spot = Request("iam:CreateServiceLinkedRole", "arn:aws:iam::YOUR-ACCOUNT:role/aws-service-role/x")
    assert not allowed(head, spot)
    assert allowed(head, Request(spot.action, spot.resource, {"iam:AWSServiceName": "spot.amazonaws.com"}))
    image = "arn:aws:ecr:us-west-2:YOUR-ACCOUNT:repository/wsss-search"
    assert allowed(head, Request("ecr:BatchGetImage", image)) and allowed(
        head, Request("ecr:GetAuthorizationToken", "*")
    )
    assert not allowed(head, Request("ecr:PutImage", image))
