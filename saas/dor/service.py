"""The DOR service: adds, serves, searches and guards data objects (DESIGN §6).

Rules every caller may rely on:
- an object becomes visible only once its content file is complete and its record committed; content is streamed
  to a temp file while hashed (and the signed body hash checked), so nothing partial is ever visible; a streamed
  upload (signed over its head only) is published only by its signer's commit naming the hash of the exact body
  received (`add_pending`, `commit_upload`, `saas.dor.pending`), and is invisible until then;
- content files are shared by identical content and removed only when no record uses them; adds hold a
  `ContentGuard` shared and removals hold it exclusively, so content is never removed under an add in progress;
- restricted objects (content and metadata) exist only for their owner and grantees: others get 404;
  owner-only changes by others get 403;
- an add (and an ownership transfer) fits its owner's storage quota (`saas.dor.quota`), and a full disk is a
  `StorageFullError` with the temp file removed: both answer 507.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from saas.core.delegation import Delegation
from saas.core.errors import (
    AuthorisationError,
    CryptoError,
    DORError,
    InvalidInputError,
    NotFoundError,
    StorageFullError,
    TooLargeError,
)
from saas.core.helpers import in_thread_to_the_end
from saas.core.identity import Identity
from saas.core.keys import b64d
from saas.core.signing import canonical_json
from saas.dor import catalog, claims, quota
from saas.dor.catalog import ObjectRow, SearchQuery
from saas.dor.guard import ContentGuard
from saas.dor.pending import Pending, PendingUploads
from saas.dor.receive import Limits, receive
from saas.dor.schemas import (
    GPP_DATA_FORMAT,
    GPP_DATA_TYPE,
    AddCDataObjectParameters,
    AddGPPDataObjectParameters,
    CDataObject,
    DataObject,
    DataObjectProvenance,
    DataObjectRecipe,
    DORStatistics,
    GPPDataObject,
    KeyEnvelope,
    PendingUpload,
    StorageUsage,
)
from saas.dor.store import ContentStore
from saas.nodedb.schemas import NodeInfo
from saas.rest.auth import body_mismatch
from saas.sqlite import Database

if TYPE_CHECKING:
    from saas.node import Node

__all__ = ["DORService", "UnknownObjectError", "object_id"]

logger = logging.getLogger(__name__)
MAX_ROUNDS = 64  # network rounds (graph levels looked up on other nodes) of one provenance query


class UnknownObjectError(DORError, NotFoundError):
    pass


def object_id(c_hash: str, data_type: str, data_format: str, creators_iid: list[str], created: int) -> str:
    return hashlib.sha256(
        canonical_json(
            {
                "c_hash": c_hash,
                "data_type": data_type,
                "data_format": data_format,
                "creators": creators_iid,
                "created": created,
            }
        )
    ).hexdigest()


def _check_envelope(envelope: str) -> None:
    try:
        b64d(envelope)
    except CryptoError:
        raise InvalidInputError("A key envelope must be base64") from None


def _recipe_of(row: ObjectRow) -> dict[str, Any] | None:
    return row.details.get("recipe") if row.kind == "c" else None


def _provenance_record(
    obj_id: str, c_hash: str, data_type: str, data_format: str, recipe: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "c_hash": c_hash,
        "data_type": data_type,
        "data_format": data_format,
        "obj_id": obj_id,
        "recipe": recipe,
    }


def _remote_record(obj: CDataObject | GPPDataObject) -> dict[str, Any]:
    recipe = obj.recipe if isinstance(obj, CDataObject) else None
    record = _provenance_record(
        obj.obj_id, obj.c_hash, obj.data_type, obj.data_format, recipe.model_dump(mode="json") if recipe else None
    )
    record["custodian"] = obj.custodian.identity.id if obj.custodian else None
    return record


CLOCK_SKEW_MS = 60_000  # how far in the future a stated creation time may be


def _now() -> int:
    return int(time.time() * 1000)


@contextlib.contextmanager
def _disk_full_as_such(what: str) -> Iterator[None]:
    """An `OSError` of a full disk (ENOSPC, EDQUOT) raised inside as the `StorageFullError` it is (507)."""
    try:
        yield
    except OSError as e:
        full = StorageFullError.from_error(e, what)
        if full is None:
            raise
        raise full from None


class LocalAdds:
    """Content added in two steps, so a caller can put the content in the same worker-thread hop as its own
    blocking work: `put(path)` (blocks) stores a local file's content and returns (c_hash, size), `await
    record(...)` inserts the object, idempotently (the same content, parameters and `created` give the existing
    object). Made by `DORService.local_adds()`, which removes content put but never recorded."""

    def __init__(self, dor: DORService):
        self._dor = dor
        self.unrecorded: set[str] = set()

    def put(self, path: Path) -> tuple[str, int]:
        with _disk_full_as_such("the data object"):
            c_hash, size = self._dor.store.ingest(path)
        self.unrecorded.add(c_hash)
        return c_hash, size

    def place(self, place: Callable[[], ObjectRow]) -> ObjectRow:
        """Blocks: `place` puts content in place (an upload's temp file, a GPP) and returns its record."""
        with _disk_full_as_such("the data object"):
            row = place()
        self.unrecorded.add(row.c_hash)
        return row

    async def insert(self, row: ObjectRow, envelopes: dict[str, str], actor: str) -> ObjectRow:
        """Insert the record of content put or placed (added by `actor`); an object added before (same content,
        type, format, creators and ms) is returned instead."""
        dor = self._dor
        inserted = await dor.db.run(quota.insert_within, row, envelopes, dor.quotas)
        self.unrecorded.discard(row.c_hash)
        if inserted:
            recipe = _recipe_of(row) or {}
            dor.audit.record(
                "object.added",
                actor=actor,
                owner=row.owner_iid,
                obj_id=row.obj_id,
                job_id=recipe.get("job_id"),
                data_type=row.data_type,
                data_format=row.data_format,
                size=row.size,
                access_restricted=row.access_restricted,
                content_encrypted=row.content_encrypted,
            )
            return row
        existing = await dor.db.run(catalog.get, row.obj_id)
        assert existing is not None
        return existing

    async def record(
        self, creator_iid: str, params: AddCDataObjectParameters, c_hash: str, size: int, created: int
    ) -> CDataObject:
        dor = self._dor
        dor.check_add(params)
        row = dor._content_row(params, creator_iid, c_hash, size, created)
        stored = await self.insert(row, dor._envelopes(params), creator_iid)
        model = dor._model(stored, params.recipe if stored is row else None)
        assert isinstance(model, CDataObject)
        return model


class DORService:
    def __init__(self, node: Node):
        self._node = node
        root = node.config.datastore / "dor"
        self._root = root
        self.store = ContentStore(root)
        self.db = Database(root / "catalog.sqlite", catalog.SCHEMA + quota.SCHEMA + claims.SCHEMA)
        self._guard = ContentGuard()
        self.max_object_size = node.config.max_object_size
        self.quotas = quota.Quotas(node.config.storage_quota, node.config.storage_quota_for, node.iid)
        self.audit = node.audit
        self.pending = PendingUploads(node.config.max_pending_uploads, node.config.pending_upload_lifetime)

    async def start(self) -> None:
        def open_all() -> tuple[int, int]:
            from saas.dor.gpp import kill_leftover_clones

            self._root.mkdir(parents=True, exist_ok=True)
            self.store.open()
            self.db.open()
            self.db.call(quota.rebuild)
            clones = kill_leftover_clones(self.store.tmp_dir)
            if clones:
                logger.info("DOR start: killed %d git processes left by an add-gpp before a crash", clones)
            return self.store.sweep(self.db.call(catalog.all_c_hashes))

        temps, orphans = await asyncio.to_thread(open_all)
        if temps or orphans:
            logger.info("DOR start: removed %d unfinished uploads or clones, %d unused content files", temps, orphans)

    async def stop(self) -> None:
        await self.pending.close()
        await asyncio.to_thread(self.db.close)

    # -- helpers ------------------------------------------------------------------------------------------------

    def _model(self, row: ObjectRow, recipe: DataObjectRecipe | None = None) -> CDataObject | GPPDataObject:
        model = row.to_model(recipe)
        model.custodian = self._node.nodedb.own
        return model

    async def _readable(self, obj_id: str, reader: Identity | None, touch: bool = False) -> ObjectRow:
        """The record if `reader` may read it (else "not found"); `touch` also records the access, in the same
        request."""
        reader_iid = reader.id if reader else None
        if touch:
            row = await self.db.run(catalog.get_touched, obj_id, reader_iid, _now())
        else:
            row = await self.db.run(catalog.get, obj_id)
        if row is not None and not row.may_read(reader_iid):
            audit_key = f"{reader_iid} {obj_id}"  # a refusal: throttled (anyone may ask, anonymously too)
            self.audit.refusal(audit_key, "object.access_refused", actor=reader_iid, owner=row.owner_iid, obj_id=obj_id)
        if row is None or not row.may_read(reader_iid):
            raise UnknownObjectError(f"Data object {obj_id} not found", {"obj_id": obj_id})
        return row

    async def _owned(self, obj_id: str, caller: Identity) -> ObjectRow:
        row = await self._readable(obj_id, caller)
        if row.owner_iid != caller.id:
            audit_key = f"{caller.id} {obj_id} change"
            self.audit.refusal(audit_key, "object.change_refused", actor=caller.id, owner=row.owner_iid, obj_id=obj_id)
            raise AuthorisationError(f"Only the owner of data object {obj_id} may do this", {"obj_id": obj_id})
        return row

    def _known(self, iid: str, role: str) -> Identity:
        identity = self._node.nodedb.get_identity(iid)
        if identity is None:
            raise InvalidInputError(
                f"The {role} {iid} is not known to this node: publish the identity first", {role: iid}
            )
        return identity

    async def _commit(self, place: Callable[[], ObjectRow], envelopes: dict[str, str], actor: str) -> ObjectRow:
        """`place` (blocking, run in a thread) puts the content in place and returns the record, which is then
        inserted (`LocalAdds`: the content guard is held, and content left unrecorded is removed)."""
        async with self.local_adds() as adds:
            return await adds.insert(await in_thread_to_the_end(adds.place, place), envelopes, actor)

    async def _remove_unused(self, c_hash: str) -> None:
        async with self._guard.exclusive():
            if not await self.db.run(catalog.c_hash_in_use, c_hash):
                await asyncio.to_thread(self.store.remove, c_hash)

    # -- adding -------------------------------------------------------------------------------------------------

    def _content_row(
        self, params: AddCDataObjectParameters, creator_iid: str, c_hash: str, size: int, created: int
    ) -> ObjectRow:
        """The record of new content; the same content, type, format, creators and `created` give the same obj_id."""
        creators = params.creators_iid or [creator_iid]
        return ObjectRow(
            obj_id=object_id(c_hash, params.data_type, params.data_format, creators, created),
            kind="c",
            c_hash=c_hash,
            data_type=params.data_type,
            data_format=params.data_format,
            owner_iid=params.owner_iid,
            access_restricted=params.access_restricted,
            content_encrypted=params.content_encrypted,
            created=created,
            last_accessed=created,
            size=size,
            details={
                "creators_iid": creators,
                "license": params.license.model_dump(),
                "recipe": params.recipe.model_dump(mode="json") if params.recipe else None,
            },
            access=[params.owner_iid],
        )

    @staticmethod
    def _envelopes(params: AddCDataObjectParameters) -> dict[str, str]:
        return {params.owner_iid: params.key_envelope} if params.key_envelope else {}

    def check_add(self, params: AddCDataObjectParameters) -> None:
        self._known(params.owner_iid, "owner")
        for iid in params.creators_iid:
            self._known(iid, "creator")
        if params.key_envelope is not None:
            if not params.content_encrypted:
                raise InvalidInputError("A key envelope is only for encrypted content")
            _check_envelope(params.key_envelope)

    async def room_for(self, owner_iid: str, size: int) -> int | None:
        """The bytes `owner_iid` may still store on this node (None: no quota); raises `QuotaExceededError` (507)
        if `size` more bytes do not fit."""
        limit = self.quotas.limit(owner_iid)
        if limit is None:
            return None
        used, _ = await self.db.run(quota.used, owner_iid)
        self.quotas.check(owner_iid, used, size)
        return limit - used

    async def usage(self, caller: Identity) -> StorageUsage:
        """What the caller's objects take on this node, and their quota."""
        used, objects = await self.db.run(quota.used, caller.id)
        return StorageUsage(iid=caller.id, bytes=used, objects=objects, quota=self.quotas.limit(caller.id))

    def _created(self, params: AddCDataObjectParameters) -> int:
        """The creation time of a new object: the one stated (not in the future), else now."""
        now = _now()
        if params.created is None:
            return now
        if params.created > now + CLOCK_SKEW_MS:
            raise InvalidInputError("The creation time of a data object may not be in the future")
        return params.created

    async def add_content(
        self,
        signer: Identity,
        params: AddCDataObjectParameters,
        head: bytes,
        first: bytes,
        chunks: AsyncIterator[bytes],
        claimed_body_sha256: str | None,
        size_hint: int | None = None,
    ) -> CDataObject:
        """Stream content to a temp file while hashing it; commit only if the signed body hash matches (None: a
        dashboard session's upload, which has none) and the signer may claim what the parameters claim
        (`saas.dor.claims`). With `size_hint` (the size announced), content that cannot fit the owner's quota or
        the disk is refused before any of it is read."""
        self.check_add(params)
        task = await claims.check(self._node, signer, params)
        created = self._created(params)
        signed_head = head if claimed_body_sha256 is not None else None  # no claim: no body hash to check
        temp, body_sha256, c_hash, size = await receive(
            self._limits(), params.owner_iid, signed_head, first, chunks, size_hint
        )
        try:
            if claimed_body_sha256 is not None and body_sha256 != claimed_body_sha256:
                raise body_mismatch()
            claims.check_product(params, c_hash)
        except BaseException:
            await asyncio.to_thread(temp.unlink, True)
            raise
        return await self._publish(signer.id, params, created, task, temp, c_hash, size)

    async def add_pending(
        self,
        signer: Identity,
        params: AddCDataObjectParameters,
        head: bytes,
        first: bytes,
        chunks: AsyncIterator[bytes],
        size_hint: int | None = None,
    ) -> PendingUpload:
        """A streamed upload (signed over its head only): stored as `add_content` stores content, checked the same
        way, but kept pending (`saas.dor.pending`) until `commit_upload` with the signer's word on the content."""
        self.check_add(params)
        task = await claims.check(self._node, signer, params)
        created = self._created(params)
        owner = params.owner_iid
        self.pending.reserve(signer.id)
        try:
            temp, _, c_hash, size = await receive(
                self._limits(), owner, None, first, chunks, size_hint, self.pending.bytes_of(owner)
            )
            try:
                claims.check_product(params, c_hash)
                if self.quotas.limit(owner) is not None:  # again, with what else arrived meanwhile
                    used, _ = await self.db.run(quota.used, owner)
                    self.quotas.check(owner, used + self.pending.bytes_of(owner), size)
                upload = Pending(signer.id, params, created, task, temp, c_hash, size)
                answer = self.pending.add(upload)
            except BaseException:
                await asyncio.to_thread(temp.unlink, True)
                raise
        except BaseException:
            self.pending.release(signer.id)
            raise
        logger.info("received %s (%d bytes) for %s: waiting for its commit", answer.pending_id, size, owner)
        return answer

    async def commit_upload(self, signer: Identity, pending_id: str, c_hash: str) -> CDataObject:
        """Publish a pending upload of `signer` if `c_hash` (which the signer signed) is the SHA-256 of the content
        the node received (its head was signed with the upload); else discard it (400). Unknown, expired or someone
        else's: `UnknownUploadError` (404)."""
        upload = self.pending.take(pending_id, signer.id)
        if not hmac.compare_digest(upload.c_hash, c_hash):
            await asyncio.to_thread(upload.temp.unlink, True)
            raise InvalidInputError(
                "The content the node received does not match the hash of the commit (the file changed while it "
                "was sent, or the upload was altered on the way): it was discarded",
                {"pending_id": pending_id, "received": upload.c_hash, "committed": c_hash},
            )
        return await self._publish(
            upload.signer_iid, upload.params, upload.created, upload.task, upload.temp, upload.c_hash, upload.size
        )

    def _limits(self) -> Limits:
        return Limits(self.store, self.db, self.quotas, self.max_object_size)

    async def _publish(
        self,
        signer_iid: str,
        params: AddCDataObjectParameters,
        created: int,
        task: str | None,
        temp: Path,
        c_hash: str,
        size: int,
    ) -> CDataObject:
        """Put received content (its complete temp file) in place and insert its record (idempotently)."""
        row = self._content_row(params, signer_iid, c_hash, size, created)
        try:
            if task is not None and params.recipe is not None:
                await self.db.run(claims.claim, task, params.recipe.name, row.obj_id)
        except BaseException:
            await asyncio.to_thread(temp.unlink, True)
            raise

        def place() -> ObjectRow:
            self.store.commit(temp, row.c_hash)
            return row

        row = await self._commit(place, self._envelopes(params), signer_iid)
        logger.info("added %s (%d bytes) for %s", row.obj_id, size, params.owner_iid)
        model = self._model(row)
        assert isinstance(model, CDataObject)
        return model

    async def add_file(
        self, creator_iid: str, params: AddCDataObjectParameters, path: Path, created: int
    ) -> CDataObject:
        """Add a local file as an object created at `created`.

        Idempotent: the same file, parameters and `created` give the same obj_id, and adding it again returns the
        existing object instead of a duplicate."""
        self.check_add(params)
        async with self.local_adds() as adds:
            c_hash, size = await in_thread_to_the_end(adds.put, path)
            return await adds.record(creator_iid, params, c_hash, size, created)

    @contextlib.asynccontextmanager
    async def local_adds(self) -> AsyncIterator[LocalAdds]:
        """Add local files in two steps (see `LocalAdds`), with the content guard held meanwhile; content put but
        not recorded is removed afterwards unless another object uses it."""
        adds = LocalAdds(self)
        try:
            async with self._guard.shared():
                yield adds
        finally:
            for c_hash in list(adds.unrecorded):
                await self._remove_unused(c_hash)

    async def add_gpp(self, signer: Identity, params: AddGPPDataObjectParameters) -> GPPDataObject:
        from saas.core.schemas import GithubCredentials, decrypt_credentials
        from saas.dor.gpp import fetch_gpp

        self._known(params.owner_iid, "owner")
        for iid in params.creators_iid:
            self._known(iid, "creator")
        claims.check_owner(signer.id, params.owner_iid, params.creators_iid or [signer.id])
        credentials = None
        if params.github_credentials is not None:
            credentials = await decrypt_credentials(
                GithubCredentials, params.github_credentials, self._node.keystore.decrypt, "GitHub credentials"
            )
        with _disk_full_as_such("the processor's repository"):
            gpp = await asyncio.to_thread(
                fetch_gpp,
                params.source,
                params.commit_id,
                params.proc_path,
                params.proc_config,
                credentials,
                self.store.tmp_dir,
                allow_local=self._node.config.allow_local_git,
                detail=signer.id == self._node.iid,  # git's output (what exists on the node) only for its owner
            )
        content = canonical_json(gpp.model_dump(mode="json"))
        c_hash = hashlib.sha256(content).hexdigest()
        now = _now()
        row = ObjectRow(
            obj_id=c_hash,
            kind="gpp",
            c_hash=c_hash,
            data_type=GPP_DATA_TYPE,
            data_format=GPP_DATA_FORMAT,
            owner_iid=params.owner_iid,
            access_restricted=False,
            content_encrypted=False,
            created=now,
            last_accessed=now,
            size=len(content),
            details={"creators_iid": params.creators_iid or [signer.id], "gpp": gpp.model_dump(mode="json")},
            access=[params.owner_iid],
        )

        def place() -> ObjectRow:
            self.store.write_bytes(content, c_hash)
            return row

        model = self._model(await self._commit(place, {}, signer.id))
        assert isinstance(model, GPPDataObject)
        return model

    # -- reading ------------------------------------------------------------------------------------------------

    async def get_meta(self, obj_id: str, reader: Identity | None, touch: bool = False) -> CDataObject | GPPDataObject:
        """The metadata `reader` may see; `touch` records an access (the caller is about to read the content)."""
        return self._model(await self._readable(obj_id, reader, touch))

    async def open_content(
        self, obj_id: str, reader: Identity, via: str | None = None
    ) -> tuple[BinaryIO, int, ObjectRow]:
        """The content opened for reading (the caller closes it), its size and record. Once open, a concurrent
        delete of the object cannot cut the download short. `via`: the node that fetches it for `reader`."""
        row = await self._readable(obj_id, reader, touch=True)

        def open_file() -> tuple[BinaryIO, int]:
            f = open(self.store.path(row.c_hash), "rb")  # noqa: SIM115 - the caller closes it
            return f, os.fstat(f.fileno()).st_size

        try:
            f, size = await asyncio.to_thread(open_file)
        except FileNotFoundError:  # deleted since the record was read
            raise UnknownObjectError(f"Data object {obj_id} not found", {"obj_id": obj_id}) from None
        self.audit.record("object.read", actor=reader.id, owner=row.owner_iid, obj_id=obj_id, via=via)
        return f, size, row

    def touch_later(self, obj_id: str) -> None:
        """Record an access (queued: nobody waits for it)."""
        self.db.write_behind(catalog.touch, obj_id, _now())

    def content_path(self, c_hash: str) -> Path:
        """Where content is stored (it may be gone by the time it is opened: treat that as "not found")."""
        return self.store.path(c_hash)

    async def get_envelope(self, obj_id: str, reader: Identity) -> KeyEnvelope:
        row = await self._readable(obj_id, reader)
        envelope = await self.db.run(catalog.get_envelope, row.obj_id, reader.id)
        if envelope is None:
            raise UnknownObjectError(f"No key envelope for {reader.id} on data object {obj_id}")
        return KeyEnvelope(iid=reader.id, envelope=envelope)

    async def envelope_for(self, obj_id: str, iid: str) -> str | None:
        """The key envelope `iid` holds for an object (base64 of the content key wrapped with its RSA key), None if
        it holds none. No reader check: for this node's own services (e.g. the RTI decrypting an input with the
        envelope the owner gave it), never for a request."""
        return await self.db.run(catalog.get_envelope, obj_id, iid)

    async def identities_in_use(self, iids: list[str]) -> set[str]:
        """Which of `iids` own or may read an object here (NodeDB keeps their records when it makes room)."""
        return await self.db.run(catalog.identities_in_use, iids) if iids else set()

    async def records(self, obj_ids: Sequence[str]) -> dict[str, CDataObject | GPPDataObject]:
        """The objects of `obj_ids` this DOR holds, by obj_id, as stored (no custodian, no reader check): for this
        node's own services (e.g. the RTI showing a job's outputs to its user), never for a request."""
        if not obj_ids:
            return {}
        rows = await self.db.run(catalog.get_many, list(obj_ids))
        return {r.obj_id: r.to_model() for r in rows}

    async def holds_key(self, obj_id: str, iid: str, caller: Identity | None = None) -> bool:
        """Whether `iid` holds the content key of an encrypted object: its owner, or an identity with a key envelope
        of its own. With `caller` (a request), answered only to whom may know: a reader of the object that is its
        owner, `iid` itself, or a holder of the key (e.g. the RTI node given an envelope, asking for its job's
        user); raises `AuthorisationError` otherwise."""
        row: ObjectRow | None
        if caller is not None:
            row = await self._readable(obj_id, caller)
        else:
            row = await self.db.run(catalog.get, obj_id)
        if row is None:
            raise UnknownObjectError(f"Data object {obj_id} not found", {"obj_id": obj_id})
        if not row.content_encrypted:
            raise InvalidInputError(f"Data object {obj_id} is not encrypted", {"obj_id": obj_id})
        asker = caller.id if caller is not None else None
        if asker not in (None, row.owner_iid, iid) and not await self.db.run(catalog.holds_key, obj_id, asker):
            raise AuthorisationError(
                f"Only the owner of data object {obj_id}, a holder of its key or the identity itself may ask "
                "whether an identity holds its key",
                {"obj_id": obj_id, "iid": iid},
            )
        return await self.db.run(catalog.holds_key, obj_id, iid)

    async def search(self, query: SearchQuery, reader: Identity | None) -> list[CDataObject | GPPDataObject]:
        rows = await self.db.run(catalog.search, query, reader.id if reader else None)
        return [self._model(r) for r in rows]

    async def statistics(self, reader: Identity | None) -> DORStatistics:
        return DORStatistics(**await self.db.run(catalog.statistics, reader.id if reader else None))

    async def lookup(self, obj_ids: list[str], reader: Identity | None) -> list[CDataObject | GPPDataObject]:
        rows = await self.db.run(catalog.get_many, obj_ids)
        return [self._model(r) for r in rows if r.may_read(reader.id if reader else None)]

    async def find_c_hashes(self, c_hashes: list[str], reader: Identity | None) -> list[CDataObject | GPPDataObject]:
        """Objects holding any of `c_hashes` that `reader` may read."""
        rows = await self.db.run(catalog.find_by_c_hashes, c_hashes) if c_hashes else []
        return [self._model(r) for r in rows if r.may_read(reader.id if reader else None)]

    async def provenance(
        self, obj_id: str, reader: Identity | None, delegation: Delegation | None = None
    ) -> DataObjectProvenance:
        """The recipe graph behind an object. Ancestors this DOR does not hold (or the reader may not read) are
        asked for on the other DOR nodes, one batch per level of the graph (other nodes read as nobody unless
        `delegation` lets this node read for the reader); what no node holds is listed in `missing`."""
        from saas.dor import remote

        reader_iid = reader.id if reader else None
        root = await self._readable(obj_id, reader)
        data_nodes: dict[str, dict[str, Any]] = {}
        proc_nodes: dict[str, dict[str, Any]] = {}
        steps: list[dict[str, Any]] = []
        unresolved: list[str] = []
        missing: list[str] = []
        seen: set[str] = set()
        pending = [_provenance_record(root.obj_id, root.c_hash, root.data_type, root.data_format, _recipe_of(root))]
        rounds = 0
        signed: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (step, its recipe): checked at the end
        while pending or unresolved:
            if not pending:
                # One network round per level: ask the other DORs for everything still unresolved.
                rounds += 1
                found = await remote.find_c_hashes(self._node, unresolved, delegation) if rounds <= MAX_ROUNDS else {}
                for c_hash in unresolved:
                    obj = found.get(c_hash)
                    if obj is None:
                        seen.add(c_hash)
                        missing.append(c_hash)
                    else:
                        pending.append(_remote_record(obj))
                unresolved = []
                continue
            record = pending.pop()
            if record["c_hash"] in seen:
                continue
            seen.add(record["c_hash"])
            recipe = record.pop("recipe")
            data_nodes[record["c_hash"]] = record
            if not recipe:
                continue
            processor = recipe["processor"]
            proc_key = hashlib.sha256(canonical_json(processor)).hexdigest()
            proc_nodes[proc_key] = {
                "source": processor["source"],
                "commit_id": processor["commit_id"],
                "proc_path": processor["proc_path"],
                "proc_config": processor["proc_config"],
                "name": processor["proc_descriptor"]["name"],
            }
            consumes = {}
            wanted = []
            for name, item in recipe["consumes"].items():
                c_hash = item.get("c_hash")
                consumes[name] = c_hash
                if c_hash is None:
                    continue
                if item.get("content") is not None:  # by value: the recipe holds it
                    data_nodes[c_hash] = {
                        "c_hash": c_hash,
                        "data_type": item.get("data_type"),
                        "data_format": item.get("data_format"),
                        "content": item["content"],
                    }
                elif c_hash not in seen:
                    wanted.append(c_hash)
            local = await self.db.run(catalog.find_by_c_hashes, wanted) if wanted else []
            # An ancestor the reader may not read here is looked for elsewhere, then reported like an absent one.
            by_hash = {r.c_hash: r for r in local if r.may_read(reader_iid)}
            for c_hash in wanted:
                if c_hash in by_hash:
                    r = by_hash[c_hash]
                    pending.append(_provenance_record(r.obj_id, r.c_hash, r.data_type, r.data_format, _recipe_of(r)))
                elif c_hash not in unresolved:
                    unresolved.append(c_hash)
            step = {
                "processor": proc_key,
                "consumes": consumes,
                "produces": {recipe["name"]: record["c_hash"]},
                "job_id": recipe.get("job_id"),
                "signer_iid": recipe.get("signer_iid"),
                "verified": False,
            }
            steps.append(step)
            signed.append((step, recipe))
        await self._verify_recipes(signed)
        return DataObjectProvenance(data_nodes=data_nodes, proc_nodes=proc_nodes, steps=steps, missing=missing)

    async def _verify_recipes(self, signed: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """Mark each step `verified` whose recipe is signed by the node it names (as anyone can check)."""
        from pydantic import ValidationError

        signers = {r.get("signer_iid"): self._node.nodedb.get_identity(r.get("signer_iid") or "") for _, r in signed}

        def verify() -> None:
            for step, recipe in signed:
                with contextlib.suppress(ValidationError):
                    step["verified"] = DataObjectRecipe.model_validate(recipe).verify(signers[recipe.get("signer_iid")])

        if any(signers.values()):
            await asyncio.to_thread(verify)

    async def fetch_remote(
        self,
        obj_id: str,
        custodian: NodeInfo,
        destination: Path,
        delegation: Delegation | None = None,
        *,
        expected_c_hash: str,
    ) -> Path:
        """Fetch the content of an object held by another node, checked against the verified `expected_c_hash`
        (see `saas.dor.remote.fetch_remote`)."""
        from saas.dor import remote

        return await remote.fetch_remote(
            self._node, obj_id, custodian, destination, delegation=delegation, expected_c_hash=expected_c_hash
        )

    # -- changing -----------------------------------------------------------------------------------------------

    async def delete(self, obj_id: str, caller: Identity) -> CDataObject | GPPDataObject:
        row = await self._owned(obj_id, caller)
        await self.db.run(catalog.delete, obj_id)
        self.audit.record("object.deleted", actor=caller.id, owner=row.owner_iid, obj_id=obj_id)
        await self._remove_unused(row.c_hash)
        return self._model(row)

    async def grant_access(self, obj_id: str, caller: Identity, iid: str, envelope: str | None) -> DataObject:
        await self._owned(obj_id, caller)
        self._require_known(iid)
        if envelope is not None:
            _check_envelope(envelope)
        await self.db.run(catalog.grant, obj_id, iid, envelope)
        self.audit.record("object.granted", actor=caller.id, owner=caller.id, obj_id=obj_id, grantee=iid)
        return await self.get_meta(obj_id, caller)

    async def revoke_access(self, obj_id: str, caller: Identity, iid: str) -> DataObject:
        row = await self._owned(obj_id, caller)
        if iid == row.owner_iid:
            raise InvalidInputError("The owner's access cannot be revoked; transfer ownership instead")
        await self.db.run(catalog.revoke, obj_id, iid)
        self.audit.record("object.revoked", actor=caller.id, owner=row.owner_iid, obj_id=obj_id, grantee=iid)
        return await self.get_meta(obj_id, caller)

    async def transfer_ownership(self, obj_id: str, caller: Identity, new_owner: str) -> DataObject:
        row = await self._owned(obj_id, caller)
        self._require_known(new_owner)
        await self.db.run(quota.set_owner_within, obj_id, new_owner, row.size, self.quotas)
        self.audit.record("object.transferred", actor=caller.id, owner=new_owner, obj_id=obj_id, previous=caller.id)
        moved = await self.db.run(catalog.get, obj_id)
        assert moved is not None
        return self._model(moved)

    async def update_tags(self, obj_id: str, caller: Identity, tags: list[DataObject.Tag]) -> DataObject:
        await self._owned(obj_id, caller)
        values = {t.key: t.value for t in tags}
        if len(json.dumps(values)) > 1024 * 1024:
            raise TooLargeError("Tags are limited to 1 MiB per request")
        await self.db.run(catalog.set_tags, obj_id, values)
        return await self.get_meta(obj_id, caller)

    async def remove_tags(self, obj_id: str, caller: Identity, keys: list[str]) -> DataObject:
        await self._owned(obj_id, caller)
        await self.db.run(catalog.remove_tags, obj_id, keys)
        return await self.get_meta(obj_id, caller)

    def _require_known(self, iid: str) -> Identity:
        identity = self._node.nodedb.get_identity(iid)
        if identity is None:
            from saas.nodedb.service import UnknownIdentityError

            raise UnknownIdentityError(f"Identity {iid} is not known to this node", {"iid": iid})
        return identity
