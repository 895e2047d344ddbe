"""Deployment: from a local git repository, asynchronous, install.sh failures keep the log tail, strict
deployment, undeploy."""

from __future__ import annotations

import pytest
from rti_support import RTIEnv, adapter_repo

from saas.core.errors import AuthenticationError, AuthorisationError, ConflictError, NotFoundError


def test_deploy_and_undeploy(env: RTIEnv) -> None:
    proc_id = env.add_gpp("abc")
    with env.rti(env.owner) as rti:
        started = rti.deploy(proc_id, env.owner)
        assert started.state in ("deploying", "ready")
        status = rti.wait_deployed(proc_id, timeout=30)
        assert status.state == "ready"
        assert status.gpp is not None and status.gpp.proc_descriptor.name == "test-proc"
        # anonymous: list and status with descriptor
        anonymous = env.rti()
        assert [p.proc_id for p in anonymous.get_deployed()] == [proc_id]
        gpp = anonymous.get_gpp(proc_id)
        assert gpp is not None and gpp.commit_id == env.commit
        assert rti.deploy(proc_id, env.owner).state == "ready"  # deploying again is a no-op
        install_log = env.node.node.config.datastore / "rti" / "procs" / proc_id / "install.log"
        assert "Run default configuration" in install_log.read_text()
        rti.undeploy(proc_id, env.owner)
        assert rti.get_deployed() == []
        assert not install_log.parent.exists()
        with pytest.raises(NotFoundError):
            rti.get_status(proc_id)
        with pytest.raises(NotFoundError):
            rti.undeploy(proc_id, env.owner)


def test_failed_install_keeps_log_tail(env: RTIEnv) -> None:
    repo, commit = adapter_repo(
        env.tmp / "broken-repo",
        "abc",
        extra={"abc/install.sh": "#!/bin/bash\necho 'installing things'\necho 'no compiler found' >&2\nexit 1\n"},
    )
    proc_id = env.add_gpp("abc", repo=repo, commit=commit)
    with env.rti(env.owner) as rti:
        rti.deploy(proc_id, env.owner)
        status = rti.wait_deployed(proc_id, timeout=30, authority=env.owner)
    assert status.state == "failed"
    assert status.error == "install.sh exited with code 1"
    assert status.log_tail is not None and "no compiler found" in status.log_tail


def test_install_log_tail_only_for_the_node_owner(env: RTIEnv) -> None:
    """An install log can hold secrets (install.sh prints what it likes): anonymous callers and other users get the
    state and a generic error, the node owner the reason and the log tail."""
    secret = "AWS_SECRET=wJalrXUtnFEMI-install-secret"
    repo, commit = adapter_repo(
        env.tmp / "leaky-repo", "abc", extra={"abc/install.sh": f"#!/bin/bash\necho '{secret}'\nexit 7\n"}
    )
    proc_id = env.add_gpp("abc", repo=repo, commit=commit)
    with env.rti(env.owner) as rti:
        started = rti.deploy(proc_id, env.owner)
        assert started.state in ("deploying", "failed")
        assert rti.wait_deployed(proc_id, timeout=30).state == "failed"
        owner = rti.get_status(proc_id, env.owner)
    assert owner.error == "install.sh exited with code 7"
    assert owner.log_tail is not None and secret in owner.log_tail
    with env.rti() as anonymous:
        views = [anonymous.get_status(proc_id), *anonymous.get_deployed()]
        response = anonymous.request("GET", "/rti", signer=env.alice)  # signed by someone else
        views += [anonymous.get_status(proc_id, env.alice)]
    assert secret not in response.text and "code 7" not in response.text
    for view in views:
        assert view.state == "failed"
        assert view.log_tail is None
        assert view.error is not None and "node owner" in view.error and "code 7" not in view.error


def test_unknown_configuration_fails_install(env: RTIEnv) -> None:
    proc_id = env.add_gpp("abc", config="nscc")  # install.sh knows nscc: ready
    with env.rti(env.owner) as rti:
        rti.deploy(proc_id, env.owner)
        assert rti.wait_deployed(proc_id, timeout=30).state == "ready"


def test_unknown_gpp_is_404(env: RTIEnv) -> None:
    with env.rti(env.owner) as rti, pytest.raises(NotFoundError):
        rti.deploy("0" * 64, env.owner)


def test_strict_deployment_only_node_owner(env: RTIEnv) -> None:
    proc_id = env.add_gpp("abc")
    with env.rti(env.alice) as rti:
        with pytest.raises(AuthorisationError) as e:
            rti.deploy(proc_id, env.alice)
        assert e.value.status == 403  # type: ignore[attr-defined]
    env.deploy("abc")
    with env.rti(env.alice) as rti, pytest.raises(AuthorisationError):
        rti.undeploy(proc_id, env.alice)


def test_non_strict_deployment_any_known_signed_identity(rti_env_factory) -> None:
    env = rti_env_factory(strict_deployment=False)
    proc_id = env.add_gpp("abc")
    with env.rti(env.alice) as rti:
        rti.deploy(proc_id, env.alice)
        assert rti.wait_deployed(proc_id, timeout=30).state == "ready"
    with env.rti() as anonymous, pytest.raises(AuthenticationError):
        anonymous.request("POST", f"/rti/proc/{proc_id}", json_body={})


def test_undeploy_refuses_while_jobs_run_unless_forced(env: RTIEnv) -> None:
    proc_id = env.deploy("slow")
    job_id = env.submit_abc(proc_id, a=30)
    with env.rti(env.owner) as rti:
        with pytest.raises(ConflictError):
            rti.undeploy(proc_id, env.owner)
        rti.undeploy(proc_id, env.owner, force=True)
    assert env.wait(job_id).state == "cancelled"


def test_install_timeout(rti_env_factory) -> None:
    env = rti_env_factory(install_timeout=0.5)
    repo, commit = adapter_repo(
        env.tmp / "sleepy-repo", "abc", extra={"abc/install.sh": "#!/bin/bash\necho start\nsleep 30\n"}
    )
    proc_id = env.add_gpp("abc", repo=repo, commit=commit)
    with env.rti(env.owner) as rti:
        rti.deploy(proc_id, env.owner)
        status = rti.wait_deployed(proc_id, timeout=20, authority=env.owner)
    assert status.state == "failed"
    assert status.error == "install.sh did not finish within 0.5 s"
    assert status.log_tail is not None and "start" in status.log_tail
