"""The body of an `add-c` upload (`POST /dor/add-c`): one line of JSON parameters, a newline, the content. A
streamed upload is signed over the head line and committed with the content's SHA-256 (hashed while it is sent);
a node of an earlier release wants the whole body's SHA-256 signed before a byte is sent (~0.6 s per GiB).

Standard library and `saas.core.signing` only: a command can start hashing (`BodyHash`, in a thread: hashlib
releases the GIL) before it imports the SDK, and hand it to `DORProxy.add_data_object`, which uses it only if it
hashed the file that upload sends (as many bytes as the file has when it is sent): `BodyHash(b"", path)` is the
content's hash, what a streamed upload's commit names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saas.core import pipeline
from saas.core.background import Background
from saas.core.signing import canonical_json

__all__ = ["BodyHash", "upload_head"]


def upload_head(
    owner_iid: str,
    creators_iid: list[str],
    data_type: str,
    data_format: str,
    access_restricted: bool,
    content_encrypted: bool,
    license: dict[str, bool] | None = None,
    recipe: dict[str, Any] | None = None,
    key_envelope: str | None = None,
    created: int | None = None,
    task_proof: dict[str, Any] | None = None,
) -> bytes:
    """The first line of an `add-c` body, with its newline (`AddCDataObjectParameters` as canonical JSON)."""
    params: dict[str, Any] = {
        "owner_iid": owner_iid,
        "creators_iid": creators_iid,
        "data_type": data_type,
        "data_format": data_format,
        "access_restricted": access_restricted,
        "content_encrypted": content_encrypted,
        "license": license or {"by": False, "sa": False, "nc": False, "nd": False},
        "recipe": recipe,
        "key_envelope": key_envelope,
    }
    if created is not None:
        params["created"] = created
    if task_proof is not None:
        params["task_proof"] = task_proof
    return canonical_json(params) + b"\n"


class BodyHash(Background[tuple[str, int]]):
    """(SHA-256 hex of `head` followed by the file at `path`, bytes of the file hashed), computed in a thread from
    construction on; `result()` waits and raises the error reading the file met. With `head=b""`: the content's
    hash."""

    def __init__(self, head: bytes, path: Path):
        self.head = head
        self.path = path
        super().__init__(self._hash, "saas-body-hash")

    def _hash(self) -> tuple[str, int]:
        with open(self.path, "rb") as f:
            return pipeline.hash_file(f, self.head)
