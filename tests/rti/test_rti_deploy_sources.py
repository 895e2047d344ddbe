"""The RTI clones only the git sources its node allows (issue 14, item 8): a GPP stored on another node (whose
owner allows local repositories) that points at a local path is refused by an execution node without
`allow_local_git` — 403 at deploy, nothing cloned — and deployed by one with it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from rti_support import adapter_repo

from saas.core.errors import AuthorisationError
from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.dor.schemas import GPPDataObject
from saas.nodedb.proxy import NodeDBProxy
from saas.rti import deploy
from saas.rti.proxy import RTIProxy
from tests.conftest import RunningNode
from tests.p2p.conftest import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_deploy_refuses_a_source_the_node_does_not_allow(
    node_factory: Callable[..., RunningNode], keystores: Callable[[str], Keystore], tmp_path: Path
) -> None:
    store = node_factory("store", node_type="storage", allow_local_git=True)
    boot = "{}:{}".format(*store.node.config.p2p_address)
    strict = node_factory("strict", boot_node=boot, node_type="execution", allow_local_git=False)
    lenient = node_factory("lenient", boot_node=boot, node_type="execution", allow_local_git=True)
    user = keystores("user")
    with NodeDBProxy(store.address) as db:
        db.update_identity(user.identity)
    for n in (store, strict, lenient):
        wait_until(lambda n=n: len(n.node.p2p.peers()) == 2, 20, "the network to form")  # type: ignore[misc]  # mypy cannot type a lambda with a default argument
    repo, commit = adapter_repo(tmp_path / "repo", "abc")
    with DORProxy(store.address, user) as dor:
        proc_id = dor.add_gpp_data_object(str(repo), commit, "abc", "default", user.identity).obj_id

    with RTIProxy(strict.address, strict.keystore) as rti:
        with pytest.raises(AuthorisationError) as refused:
            rti.deploy(proc_id, strict.keystore)
        assert refused.value.status == 403  # type: ignore[attr-defined]
        assert "--allow-local-git" in refused.value.reason
        assert rti.get_deployed() == []
    assert not (strict.node.config.datastore / "rti" / "procs" / proc_id).exists()

    with RTIProxy(lenient.address, lenient.keystore) as rti:
        rti.deploy(proc_id, lenient.keystore)
        assert rti.wait_deployed(proc_id, timeout=60, authority=lenient.keystore).state == "ready"

    # The clone itself checks too (a deployment restored after a restart, a backend called directly).
    with DORProxy(store.address) as dor:
        meta = dor.get_meta(proc_id)
    assert isinstance(meta, GPPDataObject)
    with pytest.raises(deploy.DeploymentError) as failed:
        asyncio.run(deploy.clone(tmp_path / "clone", meta.gpp))
    assert "--allow-local-git" in failed.value.reason
    assert not (tmp_path / "clone" / "repo").exists()
