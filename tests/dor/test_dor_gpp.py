"""Git-Processor-Pointers (DESIGN §6, §8) from real git repositories built in `tmp_path`: the node clones the
repository at the commit, validates the descriptor, and stores a content-addressed, deduplicated GPP object."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from saas.core.errors import InvalidInputError, RemoteError
from saas.dor.schemas import GPP_DATA_FORMAT, GPP_DATA_TYPE, GPPDataObject

DESCRIPTOR: dict[str, Any] = {
    "name": "test-proc",
    "input": [
        {
            "name": "a",
            "data_type": "JSONObject",
            "data_format": "json",
            "data_schema": {"type": "object", "properties": {"v": {"type": "number"}}, "required": ["v"]},
        },
        {
            "name": "b",
            "data_type": "JSONObject",
            "data_format": "json",
            "data_schema": {"type": "object", "properties": {"v": {"type": "number"}}, "required": ["v"]},
        },
    ],
    "output": [{"name": "c", "data_type": "JSONObject", "data_format": "json"}],
    "configurations": ["default"],
}


def adapter_files(folder: str = "proc", descriptor: Any = None) -> dict[str, str]:
    """The files of a small adapter in `folder`: descriptor.json, install.sh, execute.sh."""
    document = DESCRIPTOR if descriptor is None else descriptor
    text = document if isinstance(document, str) else json.dumps(document, indent=2)
    return {
        f"{folder}/descriptor.json": text,
        f"{folder}/install.sh": '#!/bin/sh\necho installing "$1"\n',
        f"{folder}/execute.sh": '#!/bin/sh\necho executing "$1" "$2"\n',
    }


@pytest.fixture
def repo(git_repo: Callable) -> Any:
    """A repository with an adapter in `proc/` (second commit) and a README (first commit)."""
    repository = git_repo("adapter")
    repository.first = repository.commit({"README.md": "adapter\n"}, "first")
    repository.head = repository.commit(adapter_files("proc"), "add adapter")
    return repository


def add_gpp(dor_as: Callable, users: Any, source: str, commit: str, proc_path: str = "proc", config: str = "default"):
    return dor_as(users.alice).add_gpp_data_object(source, commit, proc_path, config, users.alice.identity)


def refused(
    dor_as: Callable, users: Any, source: str, commit: str, proc_path: str = "proc", config: str = "default"
) -> RemoteError:
    with pytest.raises(RemoteError) as error:
        add_gpp(dor_as, users, source, commit, proc_path, config)
    return error.value


def test_add_gpp_from_local_path(node: Any, users: Any, repo: Any, dor_as: Callable, catalog: Callable) -> None:
    gpp = add_gpp(dor_as, users, str(repo.path), repo.head[:7])
    assert isinstance(gpp, GPPDataObject)
    assert gpp.gpp.commit_id == repo.head
    assert len(gpp.gpp.commit_id) == 40
    assert gpp.gpp.source == str(repo.path)
    assert gpp.gpp.proc_path == "proc"
    assert gpp.gpp.proc_config == "default"
    descriptor = gpp.gpp.proc_descriptor
    assert descriptor.name == "test-proc"
    assert [i.name for i in descriptor.input] == ["a", "b"]
    assert descriptor.input[0].data_schema == DESCRIPTOR["input"][0]["data_schema"]
    assert [o.name for o in descriptor.output] == ["c"]
    assert descriptor.configurations == ["default"]
    assert gpp.data_type == GPP_DATA_TYPE and gpp.data_format == GPP_DATA_FORMAT
    assert gpp.owner_iid == users.alice.iid
    assert gpp.obj_id == gpp.c_hash  # content-addressed
    assert catalog(node) == {gpp.obj_id}

    meta = dor_as(None).get_meta(gpp.obj_id)
    assert isinstance(meta, GPPDataObject) and meta.gpp == gpp.gpp
    assert [o.obj_id for o in dor_as(None).search(data_type=GPP_DATA_TYPE)] == [gpp.obj_id]


def test_add_gpp_from_file_url_and_dedup(
    node: Any, users: Any, repo: Any, dor_as: Callable, catalog: Callable, files: Callable, tmp_path: Path
) -> None:
    url = repo.path.as_uri()
    assert url.startswith("file://")
    first = add_gpp(dor_as, users, url, repo.head[:10])
    assert first.gpp.commit_id == repo.head and first.gpp.source == url
    again = add_gpp(dor_as, users, url, repo.head)  # same pointer, full commit id this time
    assert again.obj_id == first.obj_id
    assert catalog(node) == {first.obj_id}
    assert len(files(node)["content"]) == 1
    assert files(node)["tmp"] == []  # the clone is gone

    # The stored content is the canonical GPP; it downloads and matches its hash.
    content = dor_as(users.alice).get_content(first.obj_id, users.alice, tmp_path / "gpp.json")
    assert json.loads(content.read_bytes())["commit_id"] == repo.head

    # The local path is another source: another pointer.
    other = add_gpp(dor_as, users, str(repo.path), repo.head)
    assert other.obj_id != first.obj_id


def test_gpp_at_an_older_commit_without_the_adapter_is_400(users: Any, repo: Any, dor_as: Callable) -> None:
    error = refused(dor_as, users, str(repo.path), repo.first)
    assert error.status == 400
    assert "proc" in error.reason


@pytest.mark.parametrize(
    ("descriptor", "expected"),
    [
        ({k: v for k, v in DESCRIPTOR.items() if k != "output"}, "output"),
        ("{ this is not json", "not valid JSON"),
        (
            {**DESCRIPTOR, "input": [{**DESCRIPTOR["input"][0], "data_schema": {"type": "no-such-type"}}]},
            "data_schema",
        ),
        ({**DESCRIPTOR, "input": [DESCRIPTOR["input"][0], DESCRIPTOR["input"][0]]}, "duplicate input"),
        ({**DESCRIPTOR, "configurations": []}, "configurations"),
        ({**DESCRIPTOR, "output": [{"name": "../evil", "data_type": "x", "data_format": "y"}]}, "output"),
        ([1, 2, 3], "descriptor"),
        ({**DESCRIPTOR, "extra": json.loads("[" * 300 + "]" * 300)}, "nested more than 32 levels deep"),
        ('{"extra": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
        ({**DESCRIPTOR, "extra": "x" * 300_000}, "larger than 262144 bytes"),
        ({**DESCRIPTOR, "extra": "x" * 1_100_000}, "descriptor.json is larger than"),
    ],
    ids=[
        "missing-output",
        "bad-json",
        "bad-data-schema",
        "duplicate-input",
        "no-configurations",
        "bad-name",
        "list",
        "deep",
        "too-deep-to-parse",
        "large",
        "large-file",
    ],
)
def test_invalid_descriptor_is_400(
    node: Any,
    users: Any,
    git_repo: Callable,
    dor_as: Callable,
    catalog: Callable,
    files: Callable,
    descriptor: Any,
    expected: str,
) -> None:
    repository = git_repo("broken")
    commit = repository.commit(adapter_files("proc", copy.deepcopy(descriptor)))
    error = refused(dor_as, users, str(repository.path), commit)
    assert error.status == 400, error.reason
    assert isinstance(error, InvalidInputError)
    assert expected in error.reason
    assert catalog(node) == set()
    assert files(node) == {"content": [], "tmp": []}


def test_config_not_listed_is_400(node: Any, users: Any, repo: Any, dor_as: Callable, catalog: Callable) -> None:
    error = refused(dor_as, users, str(repo.path), repo.head, config="gpu-cluster")
    assert error.status == 400
    assert "gpu-cluster" in error.reason
    assert "default" in error.reason  # the configurations that exist
    assert catalog(node) == set()


def test_unknown_commit_is_400(node: Any, users: Any, repo: Any, dor_as: Callable, catalog: Callable) -> None:
    error = refused(dor_as, users, str(repo.path), "deadbeefdeadbeef")
    assert error.status == 400
    assert "deadbeefdeadbeef" in error.reason
    assert catalog(node) == set()


@pytest.mark.parametrize("proc_path", ["..", "../adapter/proc", "proc/../..", "/etc", "proc/../../adapter/proc"])
def test_proc_path_outside_the_repository_is_refused(
    node: Any, users: Any, repo: Any, dor_as: Callable, catalog: Callable, proc_path: str
) -> None:
    error = refused(dor_as, users, str(repo.path), repo.head, proc_path=proc_path)
    assert error.status in (400, 422)
    assert catalog(node) == set()


def test_symlinked_descriptor_outside_the_clone_is_refused(
    node: Any, users: Any, git_repo: Callable, dor_as: Callable, tmp_path: Path, catalog: Callable
) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(DESCRIPTOR))
    repository = git_repo("symlinked")
    files = adapter_files("proc")
    del files["proc/descriptor.json"]
    repository.commit(files)
    (repository.path / "proc" / "descriptor.json").symlink_to(outside)
    (repository.path / "elsewhere").symlink_to(tmp_path)
    commit = repository.commit({})
    error = refused(dor_as, users, str(repository.path), commit)
    assert error.status == 400
    error = refused(dor_as, users, str(repository.path), commit, proc_path="elsewhere")
    assert error.status == 400
    assert catalog(node) == set()


def test_nonexistent_repository_is_400(users: Any, dor_as: Callable, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repo"
    for source in (str(missing), missing.as_uri()):
        error = refused(dor_as, users, source, "a" * 40)
        assert error.status == 400, source


@pytest.mark.parametrize(
    "template",
    [
        "ext::sh -c touch% {marker}",
        "ext::sh -c 'touch {marker}'",
        "--upload-pack=touch {marker}",
        "-u touch {marker}",
        "fd::17",
        "ftp://127.0.0.1/{marker}",
    ],
)
def test_dangerous_sources_are_refused(
    node: Any, users: Any, dor_as: Callable, tmp_path: Path, catalog: Callable, template: str
) -> None:
    marker = tmp_path / "pwned"
    error = refused(dor_as, users, template.format(marker=marker), "a" * 40)
    assert error.status == 400
    assert not marker.exists()
    assert catalog(node) == set()


def test_owner_must_be_known_and_request_signed(
    users: Any, repo: Any, keystores: Callable, dor_as: Callable, send: Callable
) -> None:
    stranger = keystores("mallory")
    with pytest.raises(RemoteError) as error:
        dor_as(users.alice).add_gpp_data_object(str(repo.path), repo.head, "proc", "default", stranger.identity)
    assert error.value.status == 400 and "owner" in error.value.reason
    body = {
        "source": str(repo.path),
        "commit_id": repo.head,
        "proc_path": "proc",
        "proc_config": "default",
        "owner_iid": users.alice.iid,
    }
    response = send(None, "POST", "/dor/add-gpp", json.dumps(body).encode(), {"content-type": "application/json"})
    assert response.status_code == 401


def test_credentials_not_encrypted_for_the_node_are_400(users: Any, repo: Any, send: Callable) -> None:
    body = {
        "source": str(repo.path),
        "commit_id": repo.head,
        "proc_path": "proc",
        "proc_config": "default",
        "owner_iid": users.alice.iid,
    }
    for credentials in ("***not base64***", "bm90IGVuY3J5cHRlZA=="):
        raw = json.dumps({**body, "github_credentials": credentials}).encode()
        response = send(users.alice, "POST", "/dor/add-gpp", raw, {"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert credentials not in response.text


def test_github_credentials_travel_encrypted_for_the_node(node: Any, users: Any, repo: Any, dor_as: Callable) -> None:
    # The proxy encrypts credentials for the node's identity: only the node can read them, and the GPP it stores
    # (and returns) never contains them.
    import base64

    from saas.core.errors import CryptoError
    from saas.core.schemas import GithubCredentials

    credentials = GithubCredentials(login="octo", personal_access_token="ghp_secret_token_123")
    proxy = dor_as(users.alice)
    sealed = proxy.encrypt_github_credentials(credentials)
    assert "ghp_secret_token_123" not in sealed
    opened = json.loads(node.keystore.decrypt(base64.b64decode(sealed)))
    assert opened == {"login": "octo", "personal_access_token": "ghp_secret_token_123"}
    with pytest.raises(CryptoError):  # it is not for Alice
        users.alice.decrypt(base64.b64decode(sealed))

    gpp = proxy.add_gpp_data_object(
        str(repo.path), repo.head, "proc", "default", users.alice.identity, github_credentials=credentials
    )
    assert gpp.gpp.commit_id == repo.head
    assert "ghp_secret_token_123" not in gpp.model_dump_json()
