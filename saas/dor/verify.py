"""Records from peers checked against their address (DESIGN §6, §12): nothing another node says about a data object
is taken on faith.

- A GPP data object is content-addressed: its obj_id (and c_hash) is the SHA-256 of its canonical GPP, so a peer
  cannot answer a proc_id with another repository, commit or descriptor.
- A content object's obj_id is the SHA-256 of the canonical JSON of {c_hash, data_type, data_format, creators,
  created} (`saas.dor.service.object_id`), so its c_hash, type, format, creators and creation time are bound to the
  obj_id asked for; the content is then checked against that c_hash when fetched.

Everything else in a record (owner, access flags, tags) is the peer's word and is never used to decide what runs."""

from __future__ import annotations

import hashlib

from saas.core.signing import canonical_json
from saas.dor.schemas import GPP_DATA_FORMAT, GPP_DATA_TYPE, CDataObject, GitProcessorPointer, GPPDataObject
from saas.dor.service import object_id

__all__ = ["gpp_id", "record_problem"]


def gpp_id(gpp: GitProcessorPointer) -> str:
    """The obj_id (and c_hash) of the GPP data object holding `gpp`: SHA-256 of its canonical JSON."""
    return hashlib.sha256(canonical_json(gpp.model_dump(mode="json"))).hexdigest()


def record_problem(obj: CDataObject | GPPDataObject) -> str | None:
    """Why `obj` does not reproduce its own obj_id, or None when it does."""
    if isinstance(obj, GPPDataObject):
        if (obj.data_type, obj.data_format) != (GPP_DATA_TYPE, GPP_DATA_FORMAT):
            return f"GPP record {obj.obj_id} has type {obj.data_type}/{obj.data_format}"
        actual = gpp_id(obj.gpp)
        if obj.obj_id != actual or obj.c_hash != actual:
            return f"GPP record {obj.obj_id} holds a GPP that hashes to {actual}"
        return None
    actual = object_id(obj.c_hash, obj.data_type, obj.data_format, obj.created.creators_iid, obj.created.timestamp)
    if obj.obj_id != actual:
        return f"record {obj.obj_id} hashes to {actual}"
    return None
