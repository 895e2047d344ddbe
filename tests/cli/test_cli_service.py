"""`saas-cli service`: a node process configured by flags or by prompts, stopped by SIGTERM or Ctrl+C; and the
errors that stop it from starting (missing keystore choice, wrong password, a busy port)."""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import pexpect
import pytest

from saas.nodedb.proxy import NodeDBProxy
from tests.cli.cli_support import assert_clean_error

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
CTRL_U = "\x15"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def addresses() -> tuple[str, str]:
    return f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"


@pytest.mark.slow
def test_full_node_runs_until_sigterm(saas_cli, cli_env, background, shared_keystore, tmp_path: Path) -> None:
    rest, p2p = addresses()
    datastore = tmp_path / "datastore"
    node = background(
        [saas_cli, *shared_keystore.args(), "service", "--use-defaults", "--datastore", datastore,
         "--rest-address", rest, "--p2p-address", p2p],
        env=cli_env,
    )  # fmt: skip
    line = node.wait_for("Created ")
    assert line.rstrip("\n") == f"Created 'full' node instance at {rest}/{p2p} (keep RTI job history: No)"
    with NodeDBProxy(rest) as proxy:
        info = proxy.get_node()
    assert info.identity.id == shared_keystore.iid
    assert (info.dor_service, info.rti_service, info.retain_job_history, info.strict_deployment) == (
        True,
        True,
        False,
        True,
    )
    assert "{}:{}".format(*info.rest_address) == rest
    assert info.isolation == "sandbox"
    who = "uid 65534" if os.geteuid() == 0 else "the node's uid in a user namespace"
    assert node.wait_for("Isolation: ").startswith(f"Isolation: bubblewrap sandbox as {who}; ")
    assert datastore.is_dir()

    assert node.stop(signal.SIGTERM) == 0
    assert node.stdout.rstrip().endswith("Node stopped.")
    assert "Traceback" not in node.stderr


@pytest.mark.slow
def test_storage_node_has_a_dor(saas_cli, cli, cli_env, background, shared_keystore, tmp_path: Path) -> None:
    rest, p2p = addresses()
    node = background(
        [saas_cli, *shared_keystore.args(), "service", "--use-defaults", "--type", "storage", "--retain-job-history",
         "--datastore", tmp_path / "datastore", "--rest-address", rest, "--p2p-address", p2p],
        env=cli_env,
    )  # fmt: skip
    line = node.wait_for("Created ")
    assert line.rstrip("\n") == f"Created 'storage' node instance at {rest}/{p2p} (keep RTI job history: Yes)"
    with NodeDBProxy(rest) as proxy:
        info = proxy.get_node()
    assert (info.dor_service, info.rti_service, info.retain_job_history) == (True, False, True)
    result = cli("dor", "--address", rest, "search")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Found 0 data objects in the network of {rest}:"
    assert node.stop(signal.SIGTERM) == 0
    assert "Node stopped." in node.stdout


@pytest.mark.slow
def test_unsafe_no_sandbox_is_warned_about(saas_cli, cli_env, background, shared_keystore, tmp_path: Path) -> None:
    rest, p2p = addresses()
    node = background(
        [saas_cli, *shared_keystore.args(), "service", "--use-defaults", "--unsafe-no-sandbox", "--datastore",
         tmp_path / "datastore", "--rest-address", rest, "--p2p-address", p2p],
        env=cli_env,
    )  # fmt: skip
    assert node.wait_for("Isolation: ").startswith("Isolation: NONE: adapters run as the node's own user")
    with NodeDBProxy(rest) as proxy:
        assert proxy.get_node().isolation == "none"
    assert node.stop(signal.SIGTERM) == 0
    assert "WARNING: --unsafe-no-sandbox" in node.stderr


def test_several_keystores_need_keystore_id_without_tty(cli, shared_two_keystores, tmp_path: Path) -> None:
    rest, p2p = addresses()
    result = cli(
        *shared_two_keystores.args(keystore_id=False), "service", "--use-defaults",
        "--datastore", tmp_path / "datastore", "--rest-address", rest, "--p2p-address", p2p,
    )  # fmt: skip
    assert_clean_error(result, 2, "--keystore-id")
    assert not (tmp_path / "datastore").exists()


def test_invalid_network_name(cli, shared_keystore, tmp_path: Path) -> None:
    rest, p2p = addresses()
    result = cli(
        *shared_keystore.args(), "service", "--use-defaults", "--datastore", tmp_path / "datastore",
        "--rest-address", rest, "--p2p-address", p2p, "--network-name", "no spaces",
    )  # fmt: skip
    assert_clean_error(result, result.returncode, "--network-name")
    assert result.returncode != 0


@pytest.mark.parametrize(
    ("flag", "value"), [("--job-memory", "512"), ("--job-memory", "1M"), ("--trusted-proxy", "proxy.example.org")]
)
def test_out_of_range_flag_is_one_clean_line(cli, shared_keystore, tmp_path: Path, flag: str, value: str) -> None:
    """A job memory below 16 MiB (a number alone is bytes) is one readable line naming the flag, not pydantic's
    traceback from the node configuration."""
    rest, p2p = addresses()
    result = cli(
        *shared_keystore.args(), "service", "--use-defaults", "--datastore", tmp_path / "datastore",
        "--rest-address", rest, "--p2p-address", p2p, flag, value,
    )  # fmt: skip
    assert result.returncode != 0
    assert_clean_error(result, result.returncode, flag)
    assert "Traceback" not in result.stderr


def test_wrong_password(cli, shared_keystore, tmp_path: Path) -> None:
    """From $SAAS_PASSWORD: the node starts itself again without it in its environment, then fails cleanly."""
    rest, p2p = addresses()
    result = cli(
        *shared_keystore.args(password=False), "service", "--use-defaults",
        "--datastore", tmp_path / "datastore", "--rest-address", rest, "--p2p-address", p2p,
        env_extra={"SAAS_PASSWORD": "wrong"},
    )  # fmt: skip
    assert_clean_error(result, 3, "Wrong password")
    assert not (tmp_path / "datastore").exists()


@pytest.mark.slow
def test_busy_rest_port(cli, shared_keystore, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        rest = f"127.0.0.1:{busy.getsockname()[1]}"
        result = cli(
            *shared_keystore.args(), "service", "--use-defaults", "--datastore", tmp_path / "datastore",
            "--rest-address", rest, "--p2p-address", f"127.0.0.1:{free_port()}",
        )  # fmt: skip
    assert result.returncode != 0
    assert_clean_error(result, result.returncode, f"Cannot listen on {rest}")
    assert "Created" not in result.stdout


@pytest.mark.slow
def test_prompts_in_order_then_ctrl_c(spawn_cli, shared_two_keystores, tmp_path: Path) -> None:
    rest, p2p = addresses()
    datastore = tmp_path / "datastore"
    alice = shared_two_keystores
    child = spawn_cli("--keystore", alice.directory, "service")

    def answer(prompt: str, text: str) -> None:
        child.expect_exact(prompt)
        child.send(CTRL_U + text + "\r")

    answer("Enter path to datastore:", str(datastore))
    answer("Enter address for REST service:", rest)
    answer("Enter address for P2P service:", p2p)
    child.expect_exact("Enter address for boot node:")
    child.expect_exact(p2p)  # this node is the default boot node
    child.send("\r")
    child.expect_exact("Select the type of service:")
    child.expect_exact("\u00bb Full node (i.e., DOR + RTI services)")
    child.send("\r")
    for prompt in (
        "Retain RTI job history?",
        "Bind service to all network addresses?",
        "Strict processor deployment?",
        "Concurrent job processing?",
    ):
        child.expect_exact(prompt)
        child.send("\r")  # the default: No, No, Yes, Yes
    child.expect_exact("Select the keystore:")
    child.expect_exact(f"\u00bb {alice.name}/{alice.email}/{alice.iid}")
    child.send("\r")
    child.expect_exact("Enter password:")
    child.send("not the password\r")  # a wrong password is asked again
    child.expect_exact("Wrong password, try again.", timeout=30)
    child.expect_exact("Enter password:")
    child.send(alice.password + "\r")
    child.expect_exact(f"Created 'full' node instance at {rest}/{p2p} (keep RTI job history: No)", timeout=30)

    with NodeDBProxy(rest) as proxy:
        info = proxy.get_node()
    assert info.identity.id == alice.iid
    assert (info.retain_job_history, info.strict_deployment) == (False, True)
    assert "{}:{}".format(*info.p2p_address) == p2p

    child.sendintr()
    child.expect_exact("Node stopped.", timeout=30)
    child.expect(pexpect.EOF)
    child.close()
    text = ANSI.sub("", child.logfile_read.getvalue())
    assert child.exitstatus == 0, text
    prompts = [
        "Enter path to datastore:",
        "Enter address for REST service:",
        "Enter address for P2P service:",
        "Enter address for boot node:",
        "Select the type of service:",
        "Retain RTI job history?",
        "Bind service to all network addresses?",
        "Strict processor deployment?",
        "Concurrent job processing?",
        "Select the keystore:",
        "Enter password:",
        "Wrong password, try again.",
        "Created 'full' node instance",
        "Node stopped.",
    ]
    positions = [text.index(prompt) for prompt in prompts]
    assert positions == sorted(positions), text
    assert alice.password not in text
    assert "Traceback" not in text


@pytest.mark.slow
def test_quota_flags_reach_the_node(saas_cli, cli_env, background, shared_keystore, tmp_path: Path) -> None:
    """The quota flags (issue 14, item 7) configure the node: here the identity publication burst."""
    import httpx

    from saas.core.identity import Identity, derive_identity_id
    from saas.core.keys import ECKeyPair

    rest, p2p = addresses()
    node = background(
        [saas_cli, *shared_keystore.args(), "service", "--use-defaults", "--datastore", tmp_path / "datastore",
         "--rest-address", rest, "--p2p-address", p2p, "--identity-publish-burst", "2", "--max-identities", "50",
         "--max-pending-per-user", "5", "--max-running-per-user", "1", "--job-messages", "10",
         "--job-messages-bytes", "16K", "--job-message-length", "200", "--identity-publish-rate", "0.1",
         "--max-nodes", "10"],
        env=cli_env,
    )  # fmt: skip
    node.wait_for("Created ")
    with NodeDBProxy(rest) as proxy:
        e_key = proxy.get_node().identity.e_public_key
    statuses = []
    for n in range(3):
        key = ECKeyPair.generate()
        record = Identity(
            id=derive_identity_id(key.der), name=f"n{n}", email=f"n{n}@example.org", s_public_key=key.b64,
            e_public_key=e_key, nonce=0,
        )  # fmt: skip
        record = record.model_copy(update={"signature": key.sign(record.signed_content())})
        response = httpx.post(f"http://{rest}/api/v1/db/identity", json=record.model_dump(mode="json"), trust_env=False)
        statuses.append(response.status_code)
    assert statuses == [200, 200, 429]
    assert node.stop(signal.SIGTERM) == 0


def test_booking_and_gpu_flags_reach_the_node(
    saas_cli, cli_env, background, shared_keystore, publish, tmp_path: Path
) -> None:
    """`--job-gpus` (offers say how many GPUs the node has) and `--booking-grace` (an unused booking expires)."""
    import json
    import time

    from saas.core.keystore import Keystore
    from saas.rti.proxy import RTIProxy

    packages = tmp_path / "packages.json"
    packages.write_text(json.dumps({"gpu": {"cores": 1, "memory": 256, "walltime": 60, "gpus": 1}}))
    rest, p2p = addresses()
    node = background(
        [saas_cli, *shared_keystore.args(), "service", "--use-defaults", "--datastore", tmp_path / "datastore",
         "--rest-address", rest, "--p2p-address", p2p, "--packages", packages, "--job-gpus", "1",
         "--booking-grace", "1", "--job-cores", "1", "--job-memory", "512M"],
        env=cli_env,
    )  # fmt: skip
    node.wait_for("Created ")
    publish(rest, shared_keystore)
    user = Keystore.load(shared_keystore.path, shared_keystore.password)
    with RTIProxy(rest, user) as rti:
        offer = rti.get_offer({"proc_id": "e" * 64, "resources": {"gpus": 2}}, user)
        assert "The job asks 2 GPUs: this node has 1 GPUs" in offer.reasons
        now = int(time.time() * 1000)
        booking = rti.book("gpu", now - now % 3_600_000, 1, user)
        deadline = time.monotonic() + 20
        while rti.get_booking(booking.id, user).state != "expired":
            assert time.monotonic() < deadline, "the unused booking did not expire after --booking-grace 1"
            time.sleep(0.2)
    assert node.stop(signal.SIGTERM) == 0


def test_quota_flags_reach_the_node_configuration() -> None:
    """The bounds of `service` (here the streamed uploads') become the node configuration's fields."""
    from saas_cli.commands.service import _quota_settings
    from saas_cli.main import build_parser

    args = build_parser().parse_args(
        ["service", "--max-pending-uploads", "2", "--pending-upload-lifetime", "30", "--max-identities", "9"]
    )
    assert _quota_settings(args) == {"max_pending_uploads": 2, "pending_upload_lifetime": 30.0, "max_identities": 9}
