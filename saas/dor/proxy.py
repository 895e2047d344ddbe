"""`DORProxy`: the DOR of one node over REST. Method names and argument order follow the original middleware.

Uploads and downloads stream with constant memory; an upload is hashed while it is sent and published by a signed
commit of that hash (saas/dor/pending.py). A download appears at `download_path` only once complete and
checked against the object's c_hash. With `content_key`, `add_data_object` encrypts the file client-side (chunked
AES-256-GCM) and stores an envelope of the key for the owner; `get_content` with `content_key` decrypts."""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import TypeAdapter

from saas.core import pipeline
from saas.core.delegation import HEADER_DELEGATION, Delegation
from saas.core.errors import (
    DORError,
    InvalidInputError,
    LimitReachedError,
    NotFoundError,
    SaaSError,
    UnreachableError,
)
from saas.core.identity import Identity
from saas.core.signing import Signer, canonical_json, streamed_body_sha256
from saas.dor.schemas import (
    AnyDataObject,
    CDataObject,
    DataObject,
    DataObjectProvenance,
    DataObjectRecipe,
    DORStatistics,
    GPPDataObject,
    PendingUpload,
    StorageUsage,
    TaskProof,
)
from saas.dor.upload import BodyHash, upload_head
from saas.nodedb.fanout import DEFAULT_DEADLINE, NetworkList, ask_nodes
from saas.nodedb.schemas import NodeInfo
from saas.rest import bulk
from saas.rest.proxy import API_PREFIX, RESTProxy

__all__ = ["ContentMismatchError", "DORProxy", "locate", "search_network"]

_ANY = TypeAdapter(AnyDataObject)
_MANY = TypeAdapter(list[AnyDataObject])
Progress = Callable[[int, int], None]


# What a node of an earlier release answers to a streamed upload (it takes the marker for a body hash).
_LEGACY_REFUSAL = "Request body does not match its signed hash (saas-body-sha256)"
SEARCH_PAGE = 1000  # the largest page a node returns (`GET /dor?limit=`)


def _iid(value: Identity | str) -> str:
    return value.id if isinstance(value, Identity) else value


def _owner(owner: Any) -> tuple[Identity, Signer | None]:
    """An owner given as an `Identity`, or as a `Keystore` (as the original middleware's scripts do): then it
    also signs the upload when the proxy has no keystore of its own."""
    if isinstance(owner, Identity):
        return owner, None
    identity = getattr(owner, "identity", None)
    if not isinstance(identity, Identity) or not callable(getattr(owner, "sign", None)):
        raise InvalidInputError("The owner must be an Identity or a Keystore")
    return identity, owner


class ContentMismatchError(DORError):
    """Downloaded content does not match the c_hash it was checked against."""


class DORProxy(RESTProxy):
    def __init__(self, address: str | tuple[str, int], keystore: Signer | None = None, **kwargs: Any):
        super().__init__(address, keystore, **kwargs)
        self._streamed = True  # uploads hash while they send (until a node of an earlier release refuses that)

    # -- reading ------------------------------------------------------------------------------------------------

    def search(
        self,
        patterns: Sequence[str] | None = None,
        owner_iid: str | None = None,
        data_type: str | None = None,
        data_format: str | None = None,
        c_hashes: Sequence[str] | None = None,
        tags: dict[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[DataObject]:
        """Objects visible to the proxy's identity (unrestricted ones only without a keystore). Without `limit`:
        every match, fetched page by page (never cut short); with `limit`: at most that many, from `offset`."""
        params: dict[str, Any] = {}
        for key, value in (
            ("patterns", patterns),
            ("owner_iid", owner_iid),
            ("data_type", data_type),
            ("data_format", data_format),
            ("c_hashes", c_hashes),
        ):
            if value:
                params[key] = list(value) if isinstance(value, (list, tuple)) else value
        if tags:
            params["tag"] = [k if v is None else f"{k}={canonical_json(v).decode()}" for k, v in tags.items()]
        if limit is not None:
            return self._search_page(params, limit, offset)
        found: dict[str, DataObject] = {}  # by obj_id: an object added between two pages may shift one over
        while True:
            page = self._search_page(params, SEARCH_PAGE, offset)
            for obj in page:
                found.setdefault(obj.obj_id, obj)
            if len(page) < SEARCH_PAGE:
                return list(found.values())
            offset += len(page)

    def _search_page(self, params: dict[str, Any], limit: int, offset: int) -> list[DataObject]:
        response = self.request(
            "GET", "/dor", params={**params, "limit": limit, "offset": offset}, signed=self.keystore is not None
        )
        return list(_MANY.validate_python(response.json()))

    def statistics(self) -> DORStatistics:
        return DORStatistics.model_validate(self.get_json("/dor/statistics", signed=self.keystore is not None))

    def usage(self) -> StorageUsage:
        """What this identity's data objects take on the node, and its storage quota there."""
        return StorageUsage.model_validate(self.get_json("/dor/usage", signed=True))

    def get_meta(self, obj_id: str) -> DataObject | None:
        """The object's metadata, or None if it does not exist (or is not visible to this identity)."""
        try:
            return _ANY.validate_python(self.get_json(f"/dor/{obj_id}/meta", signed=self.keystore is not None))
        except NotFoundError:
            return None

    def get_provenance(self, obj_id: str, delegation: Delegation | None = None) -> DataObjectProvenance:
        """The recipe graph behind `obj_id`. With the caller's `delegation` (delegate: this node, scope
        `provenance`), restricted ancestors the caller may read on the nodes it names as servers are included."""
        headers = {HEADER_DELEGATION: delegation.to_header()} if delegation is not None else None
        signed = self.keystore is not None or delegation is not None
        return DataObjectProvenance.model_validate(
            self.get_json(f"/dor/{obj_id}/provenance", signed=signed, headers=headers)
        )

    def get_content(
        self,
        obj_id: str,
        with_authorisation_by: Signer,
        download_path: str | Path,
        content_key: bytes | None = None,
        progress: Progress | None = None,
        delegation: Delegation | None = None,
        expected_c_hash: str | None = None,
    ) -> Path:
        """Download the content to `download_path` (written atomically, checked against its c_hash: the one
        given, else the one the node states). A node fetching for a user signs as itself and passes the user's
        `delegation`."""
        target = Path(download_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        temp = Path(temp_name)
        try:
            try:
                path = f"/dor/{obj_id}/content"
                headers = self.signed_headers("GET", path, with_authorisation_by)
                if delegation is not None:
                    headers[HEADER_DELEGATION] = delegation.to_header()
                with bulk.Exchange(self.address, self.timeout) as exchange:
                    exchange.start("GET", API_PREFIX + path, headers)
                    response = exchange.response()
                    expected = expected_c_hash or response.getheader("saas-c-hash")
                    actual, _ = bulk.receive(exchange, response, fd, progress)
            finally:
                os.close(fd)
            if not expected or actual != expected:
                raise ContentMismatchError(
                    f"Downloaded content of {obj_id} does not match its c_hash", {"obj_id": obj_id}
                )
            if content_key is not None:
                from saas.core.keys import decrypt_file

                decrypt_file(temp, target, content_key)
            else:
                os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        return target

    def get_envelope(self, obj_id: str, with_authorisation_by: Signer) -> bytes:
        """The caller's key envelope for an encrypted object (unwrap it with `Keystore.unwrap_key`)."""
        body = self.request("GET", f"/dor/{obj_id}/envelope", signer=with_authorisation_by).json()
        return base64.b64decode(body["envelope"])

    def holds_key(self, obj_id: str, iid: Identity | str, with_authorisation_by: Signer) -> bool:
        """Whether `iid` holds the content key of an encrypted object (its owner, or an envelope of its own), as
        this node's DOR says; the caller must be a reader that is the owner, `iid` itself or a holder of the key."""
        body = self.request("GET", f"/dor/{obj_id}/key-holders/{_iid(iid)}", signer=with_authorisation_by).json()
        if body.get("obj_id") != obj_id or body.get("iid") != _iid(iid) or not isinstance(body.get("holds_key"), bool):
            raise DORError(f"The answer on who holds the key of {obj_id} is not for that question", {"obj_id": obj_id})
        return body["holds_key"]

    # -- adding -------------------------------------------------------------------------------------------------

    def add_data_object(
        self,
        content_path: str | Path,
        owner: Identity | Any,
        access_restricted: bool,
        content_encrypted: bool,
        data_type: str,
        data_format: str,
        creators: Sequence[Identity] | None = None,
        recipe: DataObjectRecipe | dict | None = None,
        license_by: bool = False,
        license_sa: bool = False,
        license_nc: bool = False,
        license_nd: bool = False,
        content_key: bytes | None = None,
        progress: Progress | None = None,
        key_envelope: str | None = None,
        created: int | None = None,
        task_proof: TaskProof | None = None,
        body_hash: BodyHash | None = None,
    ) -> CDataObject:
        """Upload a file as a new data object, signed by the proxy's keystore (or by `owner` given as a Keystore
        to a proxy without one).

        With `content_encrypted` and a `content_key`, the file is encrypted here first and an envelope of the key
        for `owner` is stored with the object; with `content_encrypted` and no key, the file must already be
        encrypted (and `key_envelope` may carry the owner's envelope). `created` states the creation time, so that a
        retried upload of the same content returns the same object. The upload must be signed by `owner`, who
        is among the `creators`; a `recipe` comes only from the RTI node that ran the job (signed by it, with the
        user's signed task as `task_proof`), see `saas.dor.claims`. `body_hash`: the file hashed already (e.g. by
        the CLI while it imported this module): `BodyHash(b"", path)`, the content's hash, which the commit of a
        streamed upload names; used only if it hashed the same file (and as many bytes as the file has when it
        is sent), else the file is hashed here.

        The upload is signed over its head line and the file is hashed while it is sent; a signed commit naming
        the content's hash publishes it (the node publishes nothing before it). A node of an earlier release,
        which refuses a streamed upload, gets one request signed over the whole body, hashed before it is sent
        (with `body_hash` if that hashed this head and the file)."""
        owner, signer = _owner(owner)
        if isinstance(recipe, DataObjectRecipe):
            recipe = recipe.model_dump(mode="json")
        envelope = key_envelope
        source = Path(content_path)
        encrypted_temp: Path | None = None
        try:
            if content_encrypted and content_key is not None:
                from saas.core.keys import encrypt_file

                fd, name = tempfile.mkstemp(prefix=".saas-upload-", suffix=".enc")
                os.close(fd)
                encrypted_temp = Path(name)
                encrypt_file(source, encrypted_temp, content_key)
                source = encrypted_temp
                envelope = base64.b64encode(owner.wrap_key(content_key)).decode()
            head = upload_head(
                owner.id,
                [c.id for c in creators or []],
                data_type,
                data_format,
                access_restricted,
                content_encrypted,
                {"by": license_by, "sa": license_sa, "nc": license_nc, "nd": license_nd},
                recipe,
                envelope,
                created,
                task_proof.model_dump(mode="json") if task_proof is not None else None,
            )
            if body_hash is not None and body_hash.path != source:
                body_hash = None  # hashed another file
            signer = None if self.keystore is not None else signer  # a proxy without one: signed by `owner`
            if self._streamed:
                try:
                    content_hash = body_hash if body_hash is not None and body_hash.head == b"" else None
                    return self._add_streamed(source, head, signer, content_hash, progress)
                except InvalidInputError as e:
                    if e.reason != _LEGACY_REFUSAL:
                        raise
                    self._streamed = False  # a node of an earlier release: one request, hashed first
                except LimitReachedError as e:
                    if "pending_limit" not in e.details:
                        raise  # else: as many uploads as the node keeps pending are under way; this one hashes first
            return self._add_signed(
                source, head, signer, body_hash if body_hash and body_hash.head == head else None, progress
            )
        finally:
            if encrypted_temp is not None:
                encrypted_temp.unlink(missing_ok=True)

    def _add_signed(
        self, source: Path, head: bytes, signer: Signer | None, body_hash: BodyHash | None, progress: Progress | None
    ) -> CDataObject:
        """One request signed over the whole body: the file is hashed before its first byte is sent."""
        with open(source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            body_sha256, hashed = pipeline.hash_file(f, head) if body_hash is None else body_hash.result()
            if hashed != size:
                raise InvalidInputError(f"'{source}' changed while it was being read", {"path": str(source)})
            headers = self.signed_headers("POST", "/dor/add-c", signer, body_sha256)
            answer = self._send_upload(head, f, size, headers, progress)
        return CDataObject.model_validate_json(answer)

    def _add_streamed(
        self, source: Path, head: bytes, signer: Signer | None, content_hash: BodyHash | None, progress: Progress | None
    ) -> CDataObject:
        """A streamed upload: signed over the head line, the file hashed by a thread while it is sent (unless
        `content_hash` hashes it already), then a signed commit naming that hash publishes it (the node refuses it,
        and drops the upload, if the bytes it received are not the ones hashed). See saas/dor/pending.py."""
        hashing = content_hash or BodyHash(b"", source)
        with open(source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            headers = self.signed_headers("POST", "/dor/add-c", signer, streamed_body_sha256(head))
            answer = self._send_upload(head, f, size, headers, progress)
        pending = PendingUpload.model_validate_json(answer)
        c_hash, hashed = hashing.result()
        path = f"/dor/add-c/{pending.pending_id}/commit"
        try:
            response = self.request("POST", path, json_body={"c_hash": c_hash}, signer=signer, signed=True)
        except InvalidInputError as e:
            if hashed != size or pending.c_hash != c_hash:
                raise InvalidInputError(
                    f"'{source}' changed while it was being uploaded: nothing was stored", {"path": str(source)}
                ) from e
            raise
        return CDataObject.model_validate(response.json())

    def _send_upload(
        self, head: bytes, f: BinaryIO, size: int, headers: dict[str, str], progress: Progress | None = None
    ) -> bytes:
        headers |= {"content-type": "application/octet-stream", "content-length": str(len(head) + size)}
        with bulk.Exchange(self.address, self.timeout) as exchange:
            exchange.start("POST", API_PREFIX + "/dor/add-c", headers)
            return bulk.send(exchange, head, f, size, progress)

    def add_gpp_data_object(
        self,
        source: str,
        commit_id: str,
        proc_path: str,
        proc_config: str,
        owner: Identity | Any,
        creators: Sequence[Identity] | None = None,
        github_credentials: Any = None,
    ) -> GPPDataObject:
        """Add a Git-Processor-Pointer, signed by the proxy's keystore (or by `owner` given as a Keystore to a proxy
        without one); GitHub credentials travel encrypted for the node."""
        owner, signer = _owner(owner)
        encrypted = None if github_credentials is None else self.encrypt_github_credentials(github_credentials)
        body = {
            "source": source,
            "commit_id": commit_id,
            "proc_path": proc_path,
            "proc_config": proc_config,
            "owner_iid": owner.id,
            "creators_iid": [c.id for c in creators or []],
            "github_credentials": encrypted,
        }
        signer = None if self.keystore is not None else signer
        response = self.request("POST", "/dor/add-gpp", json_body=body, signed=True, signer=signer)
        return GPPDataObject.model_validate(response.json())

    # -- changing -----------------------------------------------------------------------------------------------

    def delete_data_object(self, obj_id: str, with_authorisation_by: Signer) -> DataObject:
        return _ANY.validate_python(self.request("DELETE", f"/dor/{obj_id}", signer=with_authorisation_by).json())

    def grant_access(
        self, obj_id: str, authority: Signer, identity: Identity | str, key_envelope: bytes | None = None
    ) -> DataObject:
        """Grant access; for an encrypted object whose content key `authority` holds, the key is shared too."""
        if key_envelope is None and isinstance(identity, Identity):
            content_keys = getattr(authority, "content_keys", None)
            key_hex = content_keys.get(obj_id) if content_keys is not None else None
            if key_hex:
                key_envelope = identity.wrap_key(bytes.fromhex(key_hex))
        body = {"key_envelope": base64.b64encode(key_envelope).decode() if key_envelope else None}
        return _ANY.validate_python(
            self.request("POST", f"/dor/{obj_id}/access/{_iid(identity)}", json_body=body, signer=authority).json()
        )

    def revoke_access(self, obj_id: str, authority: Signer, identity: Identity | str) -> DataObject:
        return _ANY.validate_python(
            self.request("DELETE", f"/dor/{obj_id}/access/{_iid(identity)}", signer=authority).json()
        )

    def transfer_ownership(self, obj_id: str, authority: Signer, new_owner: Identity | str) -> DataObject:
        return _ANY.validate_python(
            self.request("PUT", f"/dor/{obj_id}/owner/{_iid(new_owner)}", signer=authority).json()
        )

    def update_tags(self, obj_id: str, authority: Signer, tags: Sequence[DataObject.Tag]) -> DataObject:
        body = [t.model_dump() if isinstance(t, DataObject.Tag) else dict(t) for t in tags]
        return _ANY.validate_python(self.request("PUT", f"/dor/{obj_id}/tags", json_body=body, signer=authority).json())

    def remove_tags(self, obj_id: str, authority: Signer, keys: Sequence[str]) -> DataObject:
        return _ANY.validate_python(
            self.request("DELETE", f"/dor/{obj_id}/tags", json_body=list(keys), signer=authority).json()
        )


def _online_dors(address: str | tuple[str, int], timeout: float) -> list[NodeInfo]:
    """The online nodes with a DOR in the network of the node at `address` (its view: `GET /db/network`)."""
    from saas.nodedb.proxy import NodeDBProxy

    with NodeDBProxy(address, timeout=timeout) as nodedb:
        return [n for n in nodedb.get_network() if n.online and n.dor_service]


def _on_each(
    nodes: Sequence[NodeInfo], fn: Callable[[NodeInfo], list[DataObject]], deadline: float
) -> list[DataObject]:
    """`fn` on every node at once (within `deadline`), the results in one list."""
    return [obj for _, found in ask_nodes(fn, nodes, deadline).answers for obj in found]


def search_network(
    address: str | tuple[str, int],
    keystore: Signer | None = None,
    *,
    timeout: float = 10.0,
    deadline: float = DEFAULT_DEADLINE,
    on_error: Callable[[NodeInfo, SaaSError], None] | None = None,
    **filters: Any,
) -> NetworkList[DataObject]:
    """Search every DOR of the network the node at `address` belongs to: the node's view of the network
    (`GET /db/network`, within `timeout`), then every online node with a DOR at once, all within `deadline`
    seconds. `filters` are those of `DORProxy.search`; `limit` applies per node. Results keep their custodian and
    come newest first; `result.unanswered` names the nodes that failed or did not answer in time (each also
    reported to `on_error`)."""
    from saas.nodedb.proxy import NodeDBProxy

    with NodeDBProxy(address, timeout=timeout) as nodedb:
        nodes = [n for n in nodedb.get_network() if n.online and n.dor_service]

    def search_one(info: NodeInfo) -> list[DataObject]:
        with DORProxy(info.rest_address, keystore, timeout=deadline, node_iid=info.identity.id) as proxy:
            found = proxy.search(**filters)
        for obj in found:
            if obj.custodian is None:
                obj.custodian = info
        return found

    outcome = ask_nodes(search_one, nodes, deadline)
    if on_error is not None:
        for missing in outcome.unanswered:
            on_error(missing.node, UnreachableError(missing.reason))
    merged: dict[tuple[str, str], DataObject] = {}
    for _, found in outcome.answers:
        for obj in found:
            custodian = obj.custodian.identity.id if obj.custodian else ""
            merged.setdefault((custodian, obj.obj_id), obj)
    ordered = sorted(merged.values(), key=lambda o: (-o.created.timestamp, o.obj_id))
    return NetworkList(ordered, outcome.unanswered)


def locate(
    address: str | tuple[str, int],
    keystore: Signer,
    obj_ids: Sequence[str],
    *,
    max_workers: int = 16,
    timeout: float = 10.0,
    on_error: Callable[[NodeInfo, SaaSError], None] | None = None,
) -> dict[str, list[DataObject]]:
    """Which nodes hold `obj_ids`: every online DOR of the network the node at `address` belongs to is asked for
    each object's metadata, signed by `keystore` (so restricted objects it may read are found too). obj_id -> the
    records found, each with its custodian; an object found nowhere is absent. A node that fails is skipped (and
    reported to `on_error`)."""

    def metadata(info: NodeInfo) -> list[DataObject]:
        found = []
        try:
            with DORProxy(info.rest_address, keystore, timeout=timeout, node_iid=info.identity.id) as proxy:
                for obj_id in obj_ids:
                    meta = proxy.get_meta(obj_id)
                    if meta is not None and meta.obj_id == obj_id:
                        meta.custodian = info
                        found.append(meta)
        except SaaSError as e:
            if on_error is not None:
                on_error(info, e)
        return found

    located: dict[str, list[DataObject]] = {}
    if obj_ids:
        for obj in _on_each(_online_dors(address, timeout), metadata, timeout):
            located.setdefault(obj.obj_id, []).append(obj)
    return located
