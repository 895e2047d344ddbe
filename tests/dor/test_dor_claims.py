"""Who may claim what in an upload (issue 14 item 4, `saas.dor.claims`): an upload is signed by its owner, who is
among its creators; a recipe is accepted only from the RTI node that ran the job, signed by it, with the user's
signed task naming that output and owner. Each attack is refused with 403 and its reason, and stores nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from saas.core.errors import AuthorisationError, ConflictError, RemoteError
from saas.dor.claims import sign_recipe
from saas.dor.proxy import DORProxy
from saas.dor.schemas import DataObjectRecipe
from tests.claims_support import job_output, proc_id_of, submission, task_for
from tests.dor.test_dor_objects import RECIPE

CONTENT = b'{"v": 42}'
JSON: dict[str, Any] = {"data_type": "JSONObject", "data_format": "json"}


def refused(upload: Callable[[], Any], words: str) -> str:
    with pytest.raises(AuthorisationError) as error:
        upload()
    assert isinstance(error.value, RemoteError) and error.value.status == 403
    assert words in error.value.reason, error.value.reason
    return error.value.reason


def test_upload_in_someone_elses_name_with_an_invented_recipe_is_refused(
    node: Any, users: Any, dor_as: Callable, write_file: Callable, catalog: Callable, files: Callable, send: Callable
) -> None:
    """The attack of the issue: Bob uploads an object owned and created by Alice, with a recipe he made up."""
    bob = dor_as(users.bob)

    def attack(**kwargs: Any) -> Any:
        return bob.add_data_object(
            write_file(CONTENT), users.alice.identity, False, False, creators=[users.alice.identity], **JSON, **kwargs
        )

    refused(lambda: attack(recipe=RECIPE), "A recipe is accepted only from the RTI node that ran the job")
    refused(attack, "An upload must be signed by its owner")
    # The raw request gets the same answer: 403 with the reason in the error envelope.
    head = {"owner_iid": users.alice.iid, "creators_iid": [users.alice.iid], **JSON}
    response = send(users.bob, "POST", "/dor/add-c", json.dumps(head).encode() + b"\n" + CONTENT)
    assert response.status_code == 403
    assert response.json()["reason"].startswith("An upload must be signed by its owner")
    assert catalog(node) == set()
    assert files(node) == {"content": [], "tmp": []}


def test_the_signer_is_among_the_creators(users: Any, add: Callable, node: Any, catalog: Callable) -> None:
    refused(lambda: add(CONTENT, owner=users.bob, creators=[users.alice.identity]), "among its creators")
    assert catalog(node) == set()
    obj = add(CONTENT, owner=users.bob, creators=[users.bob.identity, users.carol.identity])  # co-creators he names
    assert obj.created.creators_iid == [users.bob.iid, users.carol.iid]


def test_a_gpp_is_added_by_its_owner(
    node: Any, users: Any, dor_as: Callable, git_repo: Callable, catalog: Callable, files: Callable
) -> None:
    """A GPP names an owner and creators too: Bob cannot add one in Alice's name (refused before any clone)."""
    repo = git_repo("adapter")
    commit = repo.commit({"README.md": "not even an adapter\n"})
    add = dor_as(users.bob).add_gpp_data_object
    refused(lambda: add(str(repo.path), commit, "proc", "default", users.alice.identity), "signed by its owner")
    refused(
        lambda: add(str(repo.path), commit, "proc", "default", users.bob.identity, creators=[users.alice.identity]),
        "among its creators",
    )
    assert catalog(node) == set()
    assert files(node) == {"content": [], "tmp": []}


def test_a_user_cannot_sign_recipes(users: Any, dor_as: Callable, write_file: Callable) -> None:
    """Bob signs a recipe and a task himself: he runs no RTI, so he cannot claim to have run a job."""
    claim = job_output(users.bob, users.bob, RECIPE, CONTENT)
    upload = dor_as(users.bob).add_data_object
    refused(
        lambda: upload(write_file(CONTENT), users.bob.identity, False, False, **JSON, **claim),
        "known to run an RTI",
    )


def test_a_genuine_recipe_cannot_be_copied_to_another_upload(
    users: Any, add_output: Callable, dor_as: Callable, write_file: Callable
) -> None:
    genuine = add_output(CONTENT, RECIPE)
    assert genuine.recipe is not None and genuine.recipe.signature
    upload = dor_as(users.bob).add_data_object
    refused(
        lambda: upload(write_file(CONTENT), users.bob.identity, False, False, **JSON, recipe=genuine.recipe),
        "A recipe is accepted only from the RTI node that ran the job",
    )


def _variant(node: Any, users: Any, case: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Upload arguments (owner, flags) and claim of the node's RTI, changed as `case` says, and the content."""
    alice, bob = users.alice, users.bob
    args: dict[str, Any] = {"owner": alice.identity, "access_restricted": False, "content_encrypted": False}
    claim = job_output(node.keystore, alice, RECIPE, CONTENT)
    content = CONTENT
    task = task_for(RECIPE, alice.iid, alice.iid)
    if case == "no task":
        claim["task_proof"] = None
    elif case == "another owner":
        args["owner"] = bob.identity
    elif case == "task for another node":
        claim["task_proof"] = submission(alice, bob.iid, task["proc_id"], task)
    elif case == "task changed":
        claim["task_proof"] = claim["task_proof"].model_copy(
            update={"body": json.dumps(task_for(RECIPE, alice.iid, bob.iid))}
        )
        args["owner"] = bob.identity
    elif case == "task signed by another user":
        claim["task_proof"] = submission(bob, node.node.iid, task["proc_id"], task)
    elif case == "not a submission":
        claim["task_proof"] = submission(alice, node.node.iid, task["proc_id"], task, path="/api/v1/dor/add-gpp")
    elif case == "another processor":
        other = {**RECIPE["processor"], "commit_id": "f" * 40}
        claim = job_output(node.keystore, alice, RECIPE, CONTENT, task={**task, "proc_id": proc_id_of(other)})
    elif case == "another creator":
        claim["creators"] = [alice.identity, bob.identity]
    elif case == "other content":
        content = b'{"v": "not what the job made"}'
    elif case == "restriction dropped":
        claim = job_output(node.keystore, alice, RECIPE, CONTENT, restricted_access=True)
    elif case == "another target":
        claim = job_output(node.keystore, alice, RECIPE, CONTENT, target_node_iid=bob.iid)
    elif case == "unsigned recipe":
        claim["recipe"] = claim["recipe"].model_copy(update={"signature": None})
    elif case == "recipe changed":
        claim["recipe"] = claim["recipe"].model_copy(update={"name": "d"})
    return {**args, **claim}, task, content


CASES = {
    "no task": "must carry the user's signed task",
    "another owner": "names another owner",
    "task for another node": "submitted to another node",
    "task changed": "task's signature is invalid",
    "task signed by another user": "not signed by its user",
    "not a submission": "not a job submission",
    "another processor": "not the one the task ran",
    "another creator": "only that user",
    "other content": "not the product its recipe names",
    "restriction dropped": "another restriction or encryption",
    "another target": "on another node",
    "unsigned recipe": "A recipe is accepted only from the RTI node",
    "recipe changed": "recipe's signature is invalid",
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_rti_node_claims_only_what_the_signed_task_says(
    case: str, node: Any, users: Any, write_file: Callable, catalog: Callable, files: Callable
) -> None:
    kwargs, _, content = _variant(node, users, case)
    with DORProxy(node.address, node.keystore) as dor:
        refused(lambda: dor.add_data_object(write_file(content), **JSON, **kwargs), CASES[case])
    assert catalog(node) == set()
    assert files(node) == {"content": [], "tmp": []}


def test_one_signed_task_gives_each_output_once(node: Any, users: Any, write_file: Callable) -> None:
    claim = job_output(node.keystore, users.alice, RECIPE, CONTENT)
    with DORProxy(node.address, node.keystore) as dor:

        def store(content: bytes, recipe: DataObjectRecipe, created: int) -> Any:
            return dor.add_data_object(
                write_file(content),
                users.alice.identity,
                False,
                False,
                **JSON,
                creators=claim["creators"],
                recipe=recipe,
                task_proof=claim["task_proof"],
                created=created,
            )

        first = store(CONTENT, claim["recipe"], 1_000)
        assert store(CONTENT, claim["recipe"], 1_000).obj_id == first.obj_id  # a retry: the same object
        other = b'{"v": "a second object from the same task"}'
        recipe = claim["recipe"].model_copy(deep=True)
        recipe.product["c_hash"] = hashlib.sha256(other).hexdigest()
        with pytest.raises(ConflictError) as error:
            store(other, sign_recipe(recipe, node.keystore), 2_000)
        assert (
            isinstance(error.value, RemoteError)
            and error.value.status == 409
            and "already stored" in error.value.reason
        )


def test_a_submission_signed_for_run_is_a_task_too(node: Any, users: Any, write_file: Callable) -> None:
    """`POST .../run?wait=..` submits a job as `.../jobs` does: its signed request is accepted as the task."""
    task = task_for(RECIPE, users.alice.iid, users.alice.iid)
    path = f"/api/v1/rti/proc/{task['proc_id']}/run?wait=10.0"
    claim = job_output(node.keystore, users.alice, RECIPE, CONTENT)
    claim["task_proof"] = submission(users.alice, node.node.iid, task["proc_id"], task, path=path)
    with DORProxy(node.address, node.keystore) as dor:
        obj = dor.add_data_object(write_file(CONTENT), users.alice.identity, False, False, **JSON, **claim)
    assert obj.recipe is not None and obj.recipe.signer_iid == node.node.iid
