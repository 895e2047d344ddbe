"""What an RTI node sends with a job output (`saas.dor.claims`), made by hand for DOR tests that need recipes
without running a job: the user's signed submission of a task naming the output, and the recipe signed by the
node. `job_output(...)` returns the keyword arguments of `DORProxy.add_data_object` (signed by the node)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from saas.core.keystore import Keystore
from saas.core.signing import canonical_json, sign_request
from saas.dor.claims import sign_recipe
from saas.dor.schemas import DataObjectRecipe, GitProcessorPointer, TaskProof


def proc_id_of(processor: dict[str, Any]) -> str:
    return hashlib.sha256(
        canonical_json(GitProcessorPointer.model_validate(processor).model_dump(mode="json"))
    ).hexdigest()


def submission(user: Keystore, node_iid: str, proc_id: str, task: dict[str, Any], path: str | None = None) -> TaskProof:
    """`user`'s signed submission of `task` to node `node_iid`, as that node's RTI keeps it."""
    body = json.dumps(task)
    path = path or f"/api/v1/rti/proc/{proc_id}/jobs"
    headers = sign_request(user, "POST", path, node_iid, hashlib.sha256(body.encode()).hexdigest())
    return TaskProof(
        method="POST",
        path=path,
        timestamp=headers["saas-timestamp"],
        nonce=headers["saas-nonce"],
        iid=user.iid,
        node=node_iid,
        signature=headers["saas-signature"],
        body=body,
    )


def task_for(recipe: dict[str, Any], user_iid: str, owner_iid: str, **output: Any) -> dict[str, Any]:
    """A task that produces `recipe`'s output for `owner_iid` (inputs by value, named as the recipe's)."""
    return {
        "proc_id": proc_id_of(recipe["processor"]),
        "user_iid": user_iid,
        "input": [{"name": name, "type": "value", "value": 1} for name in recipe["consumes"]],
        "output": [{"name": recipe["name"], "owner_iid": owner_iid, **output}],
    }


def job_output(
    rti: Keystore,
    user: Keystore,
    recipe: dict[str, Any],
    content: bytes,
    owner: Keystore | None = None,
    task: dict[str, Any] | None = None,
    **output: Any,
) -> dict[str, Any]:
    """The claim of node `rti` storing `content` as output of `user`'s job: creators, signed recipe, task proof."""
    owner = owner or user
    task = task or task_for(recipe, user.iid, owner.iid, **output)
    signed = DataObjectRecipe.model_validate({**recipe, "product": {**recipe["product"]}})
    signed.product["c_hash"] = hashlib.sha256(content).hexdigest()
    return {
        "creators": [user.identity],
        "recipe": sign_recipe(signed, rti),
        "task_proof": submission(user, rti.iid, task["proc_id"], task),
    }
