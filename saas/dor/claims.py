"""Who may claim what in an upload (`POST /dor/add-c`, `POST /dor/add-gpp`): owner, creators and recipe.

- Without a recipe (and always for a GPP), an upload is signed by its owner, and the signer is among the creators
  (they default to the signer). Nobody creates objects in someone else's name.
- With a recipe (a job output), the upload is signed by the RTI node that ran the job: the recipe is signed by
  that node (`DataObjectRecipe.signer_iid`/`signature`), the node is known to have an RTI, and the upload carries
  the user's signed submission of the job (`TaskProof`), addressed to that node. The task must name this output
  with this owner (and restriction, encryption and target node), be for the processor of the recipe, and its user
  is the object's only creator. One signed task gives each of its outputs once per DOR (`claim`): a node cannot
  mint more objects in the user's name from a task it was given.

Every refusal is a 403 (`ClaimError`) with the reason. Provenance cannot be invented: a recipe shown by any DOR
can be checked by anyone against the public key of the node that signed it."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
from typing import TYPE_CHECKING

from pydantic import ValidationError

from saas.core.errors import AuthorisationError, ConflictError, DORError
from saas.core.identity import Identity
from saas.core.signing import Signer, canonical_json, request_string
from saas.dor.schemas import AddCDataObjectParameters, DataObjectRecipe, TaskProof
from saas.rti.schemas import Task

if TYPE_CHECKING:
    from saas.node import Node

__all__ = ["SCHEMA", "ClaimError", "check", "check_owner", "check_product", "claim", "sign_recipe"]

# What a user signs to submit a job (saas/rti/api.py: submit and run).
_SUBMISSION = re.compile(r"^/api/v1/rti/proc/([0-9a-f]{64})/(?:jobs|run)(?:\?.*)?$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    task TEXT NOT NULL, output TEXT NOT NULL, obj_id TEXT NOT NULL, PRIMARY KEY (task, output)
);
"""


class ClaimError(DORError, AuthorisationError):
    """An upload claims an owner, creator or recipe its signer may not claim (403)."""


def sign_recipe(recipe: DataObjectRecipe, signer: Signer) -> DataObjectRecipe:
    """The recipe signed by the RTI node that ran the job. Blocks (crypto)."""
    unsigned = recipe.model_copy(update={"signer_iid": signer.iid, "signature": None})
    return unsigned.model_copy(update={"signature": signer.sign(unsigned.signed_content())})


def _proof_message(proof: TaskProof) -> bytes:
    body_sha256 = hashlib.sha256(proof.body.encode("utf-8")).hexdigest()
    return request_string(proof.method, proof.path, proof.timestamp, proof.nonce, proof.node, body_sha256)


def check_owner(signer_iid: str, owner_iid: str, creators_iid: list[str]) -> None:
    """An upload (content or GPP) without a recipe: signed by its owner, who is among the creators."""
    if owner_iid != signer_iid:
        raise ClaimError(
            "An upload must be signed by its owner: nobody else may create objects in the owner's name",
            {"owner_iid": owner_iid, "signer_iid": signer_iid},
        )
    if signer_iid not in creators_iid:
        raise ClaimError("The signer of an upload must be among its creators", {"signer_iid": signer_iid})


async def check(node: Node, signer: Identity, params: AddCDataObjectParameters) -> str | None:
    """Refuse (`ClaimError`) an upload whose signer may not claim its owner, creators or recipe. For a job output,
    returns the key of the claim (the signed task) to record with `claim`; None for an owner's own upload."""
    creators = params.creators_iid or [signer.id]
    if params.recipe is None:
        if params.task_proof is not None:
            raise ClaimError("A signed task comes only with a job output's recipe")
        check_owner(signer.id, params.owner_iid, creators)
        return None
    recipe, proof = params.recipe, params.task_proof
    if recipe.signer_iid != signer.id or not recipe.signature:
        raise ClaimError(
            "A recipe is accepted only from the RTI node that ran the job, signed by it and signing the upload",
            {"recipe_signer_iid": recipe.signer_iid, "signer_iid": signer.id},
        )
    record = node.nodedb.own if signer.id == node.iid else node.nodedb.get_node(signer.id)
    if record is None or not record.rti_service:
        raise ClaimError("A recipe is accepted only from a node known to run an RTI", {"signer_iid": signer.id})
    if proof is None:
        raise ClaimError("A job output must carry the user's signed task (task_proof)")
    user = node.nodedb.get_identity(proof.iid)
    if user is None:
        raise ClaimError("The user who signed the task is not known to this node", {"user_iid": proof.iid})
    return await asyncio.to_thread(_check_output, node.iid, signer, user, params, recipe, proof, creators)


def _check_output(
    dor_iid: str,
    signer: Identity,
    user: Identity,
    params: AddCDataObjectParameters,
    recipe: DataObjectRecipe,
    proof: TaskProof,
    creators: list[str],
) -> str:
    """The checks of a job output that need crypto or parsing. Blocks."""
    if not recipe.verify(signer):
        raise ClaimError("The recipe's signature is invalid", {"signer_iid": signer.id})
    message = _proof_message(proof)
    if not user.verify_signature(message, proof.signature):
        raise ClaimError("The task's signature is invalid", {"user_iid": user.id})
    if proof.node != signer.id:
        raise ClaimError("The task was submitted to another node than the one storing its output", {"node": proof.node})
    submission = _SUBMISSION.match(proof.path)
    if proof.method != "POST" or submission is None:
        raise ClaimError("The signed request is not a job submission", {"path": proof.path[:200]})
    try:
        task = Task.model_validate_json(proof.body)
    except ValidationError:
        raise ClaimError("The signed task is not a valid task") from None
    if task.user_iid != user.id or task.proc_id != submission.group(1):
        raise ClaimError("The task was not signed by its user for its processor", {"user_iid": task.user_iid})
    try:
        processor_id = hashlib.sha256(canonical_json(recipe.processor.model_dump(mode="json"))).hexdigest()
    except ValueError:
        processor_id = ""
    if processor_id != task.proc_id:
        raise ClaimError("The recipe's processor is not the one the task ran", {"proc_id": task.proc_id})
    out = next((o for o in task.output if o.name == recipe.name), None)
    if out is None:
        raise ClaimError(f"The task has no output '{recipe.name[:64]}'")
    if out.owner_iid != params.owner_iid:
        raise ClaimError(
            f"The task names another owner for output '{out.name}'",
            {"owner_iid": params.owner_iid, "task_owner_iid": out.owner_iid},
        )
    if (out.restricted_access, out.content_encrypted) != (params.access_restricted, params.content_encrypted):
        raise ClaimError(f"The task asks another restriction or encryption for output '{out.name}'")
    if out.target_node_iid not in (None, dor_iid):
        raise ClaimError(f"The task stores output '{out.name}' on another node", {"node": out.target_node_iid})
    if creators != [task.user_iid]:
        raise ClaimError("The creator of a job output is the job's user, and only that user", {"user_iid": user.id})
    product = (recipe.product.get("data_type"), recipe.product.get("data_format"))
    if product != (params.data_type, params.data_format):
        raise ClaimError("The recipe's product has another data type or format than the upload")
    if sorted(recipe.consumes) != sorted(i.name for i in task.input):
        raise ClaimError("The recipe's inputs are not the task's")
    return hashlib.sha256(message).hexdigest()


def check_product(params: AddCDataObjectParameters, c_hash: str) -> None:
    """A job output's content is the product its recipe names."""
    if params.recipe is not None and params.recipe.product.get("c_hash") != c_hash:
        raise ClaimError("The content is not the product its recipe names (c_hash)", {"c_hash": c_hash})


def claim(conn: sqlite3.Connection, task: str, output: str, obj_id: str) -> None:
    """Record that output `output` of the signed task `task` is `obj_id`; refuse (409) another object for it."""
    conn.execute("INSERT OR IGNORE INTO claims (task, output, obj_id) VALUES (?, ?, ?)", (task, output, obj_id))
    first = conn.execute("SELECT obj_id FROM claims WHERE task = ? AND output = ?", (task, output)).fetchone()[0]
    if first != obj_id:
        raise ConflictError(
            f"Output '{output}' of this task is already stored here as another object", {"obj_id": first}
        )
