"""Just enough of AWS's IAM to check cluster.yaml's roles offline: S3 requests, as a real client sent
them to a real S3 API (moto's server, which records them), turned into the IAM action, resource and
condition keys AWS authorizes them by, and an identity policy's Allow statements evaluated on them.

AWS's rules followed (IAM User Guide, "Policy evaluation logic" and the S3 action reference): a request
is allowed when some Allow statement matches its action and resource (wildcards `*` and `?`,
case-insensitive actions) and all of that statement's conditions hold; a StringLike or StringEquals
condition on a key the request does not carry does not hold. HeadBucket and ListObjects(V2) are
s3:ListBucket on the bucket (with `s3:prefix` only when the request names one); HEAD and GET of an
object are s3:GetObject; PUT, and the multipart calls, s3:PutObject; DELETE s3:DeleteObject.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: dict[str, str] = field(default_factory=dict)
    sent: str = ""  # the HTTP request it came from, for messages

    def __str__(self) -> str:
        return f"{self.action} on {self.resource} {self.context or ''} ({self.sent})"


def s3_requests(recorded: list[dict[str, Any]], bucket_as: str) -> list[Request]:
    """The IAM view of recorded path-style S3 requests; the bucket is renamed `bucket_as`."""
    out = []
    for entry in recorded:
        url = urlparse(entry["url"])
        query = parse_qs(url.query, keep_blank_values=True)
        _, _, rest = url.path.partition("/")
        bucket, _, key = rest.partition("/")
        if not bucket:
            continue  # ListBuckets: no policy here grants or needs it
        method, key = entry["method"], unquote(key)
        sent = f"{method} {url.path}{'?' + url.query if url.query else ''}"
        if not key:
            out.append(_bucket_request(method, query, bucket_as, sent))
            continue
        resource = f"arn:aws:s3:::{bucket_as}/{key}"
        if method in ("GET", "HEAD"):
            out.append(Request("s3:GetObject", resource, sent=sent))
        elif method in ("PUT", "POST"):
            out.append(Request("s3:PutObject", resource, sent=sent))
            source = entry["headers"].get("x-amz-copy-source") or entry["headers"].get("X-Amz-Copy-Source")
            if source:
                copied = unquote(source).lstrip("/").partition("/")[2]
                out.append(Request("s3:GetObject", f"arn:aws:s3:::{bucket_as}/{copied}", sent=sent))
        elif method == "DELETE":
            action = "s3:AbortMultipartUpload" if "uploadId" in query else "s3:DeleteObject"
            out.append(Request(action, resource, sent=sent))
        else:
            raise ValueError(f"an S3 request this model does not know: {sent}")
    return out


def _bucket_request(method: str, query: dict[str, list[str]], bucket: str, sent: str) -> Request:
    arn = f"arn:aws:s3:::{bucket}"
    if method == "HEAD" or (method == "GET" and not ({"location", "versioning", "acl"} & set(query))):
        prefix = query.get("prefix")
        return Request("s3:ListBucket", arn, {"s3:prefix": prefix[0]} if prefix else {}, sent)
    if method == "GET" and "location" in query:
        return Request("s3:GetBucketLocation", arn, sent=sent)
    if method == "PUT" and not query:
        return Request("s3:CreateBucket", arn, sent=sent)
    if method == "POST" and "delete" in query:
        return Request("s3:DeleteObject", f"{arn}/*", sent=sent)  # DeleteObjects: each key in the body
    raise ValueError(f"a bucket request this model does not know: {sent}")


def _matches(patterns: str | list[str], value: str, case: bool) -> bool:
    items = [patterns] if isinstance(patterns, str) else patterns
    if not case:
        value, items = value.lower(), [p.lower() for p in items]
    return any(fnmatch.fnmatchcase(value, p) for p in items)


def _conditions_hold(conditions: dict[str, dict[str, Any]], context: dict[str, str]) -> bool:
    for operator, tests in conditions.items():
        if operator not in ("StringLike", "StringEquals"):
            raise ValueError(f"condition operator {operator}: not modelled")
        for key, wanted in tests.items():
            if key not in context:
                return False
            values = [wanted] if isinstance(wanted, str) else wanted
            if operator == "StringEquals" and context[key] not in values:
                return False
            if operator == "StringLike" and not _matches(values, context[key], case=True):
                return False
    return True


def allowed(policy: dict[str, Any], request: Request) -> bool:
    if any(s["Effect"] != "Allow" for s in policy["Statement"]):
        raise ValueError("only Allow statements are modelled")
    return any(
        _matches(s["Action"], request.action, case=False)
        and _matches(s["Resource"], request.resource, case=True)
        and _conditions_hold(s.get("Condition", {}), request.context)
        for s in policy["Statement"]
    )
