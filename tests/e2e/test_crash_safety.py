"""Crash safety of the DOR (DESIGN §6): a node process killed with SIGKILL at any point leaves no visible partial
object, no leftover temp file and no content file without a record once it is restarted on the same datastore;
an object whose add completed survives the crash intact. A dashboard session is stored before its cookie is sent:
it survives the kill too."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from e2e_support import MiB, NodeProcess, StreamingUpload, sha256_file, wait_for, write_random_file

from saas.core.errors import UnavailableError, UnreachableError
from saas.core.keystore import Keystore
from saas.core.login import LoginToken
from saas.dor.proxy import DORProxy
from saas.dor.schemas import DataObject
from saas.rest.sessions import HEADER_CSRF

pytestmark = pytest.mark.slow

BIG = 300 * MiB
RATE = 60 * MiB  # bytes/s: the big upload takes ~5 s, so it is surely in progress when the node is killed


def add_file(dor: DORProxy, owner: Keystore, path: Path, data_type: str = "E2EData") -> DataObject:
    return dor.add_data_object(path, owner.identity, False, False, data_type, "bin")


def assert_store_consistent(node: NodeProcess, dor: DORProxy) -> list[DataObject]:
    """No temp files; content files are exactly the c_hashes of the objects, each holding its c_hash's bytes."""
    objects = dor.search(limit=1000)
    assert node.temp_files() == [], "unfinished uploads left in dor/tmp"
    c_hashes = {o.c_hash for o in objects}
    files = node.content_files()
    names = {p.name for p in files}
    assert names - c_hashes == set(), "content files without a record"
    assert c_hashes - names == set(), "records without a content file"
    for path in files:
        assert path.parent.name == path.name[:2]
        assert sha256_file(path) == path.name, f"content file {path.name} does not hold its c_hash's bytes"
    return objects


def assert_catalog_works(dor: DORProxy, owner: Keystore, tmp_path: Path) -> DataObject:
    """A new add and a download of it work after the restart."""
    source = write_random_file(tmp_path / "after-restart.bin", 2 * MiB + 17)
    obj = add_file(dor, owner, source, "E2EAfterRestart")
    assert dor.get_meta(obj.obj_id) is not None
    target = dor.get_content(obj.obj_id, owner, tmp_path / "downloads" / "after-restart.bin")
    assert sha256_file(target) == sha256_file(source) == obj.c_hash
    assert [o.obj_id for o in dor.search(data_type="E2EAfterRestart")] == [obj.obj_id]
    return obj


def test_kill_during_large_upload(node_process: NodeProcess, user: Keystore, tmp_path: Path) -> None:
    node = node_process
    node.publish(user)
    dor = node.dor(user)
    kept = add_file(dor, user, write_random_file(tmp_path / "kept.bin", MiB))

    upload = StreamingUpload(node.dor(user), user.identity, BIG, RATE).start()
    try:
        temp = wait_for(lambda: next(iter(node.temp_files()), None), 10, "the upload's temp file")
        first = wait_for(lambda: temp.stat().st_size >= 8 * MiB and temp.stat().st_size, 10, "8 MiB in the temp file")
        wait_for(lambda: temp.stat().st_size > first, 5, "the temp file to grow")
        assert not upload.done, f"the upload ended before the kill: {upload.result or upload.error!r}"
        assert upload.sent < BIG
        node.kill()
    finally:
        upload.join()
    assert upload.result is None, "the upload succeeded although the node was killed"
    assert isinstance(upload.error, UnreachableError), repr(upload.error)
    assert temp.exists(), "the crash should have left the partial temp file behind"

    node.restart()
    objects = assert_store_consistent(node, dor)
    assert [o.obj_id for o in objects] == [kept.obj_id]
    assert dor.search(data_type="E2EStream") == []
    assert dor.statistics().objects == 1
    assert_catalog_works(dor, user, tmp_path)
    assert len(assert_store_consistent(node, dor)) == 2


def test_kill_right_after_add(node_process: NodeProcess, user: Keystore, tmp_path: Path) -> None:
    node = node_process
    node.publish(user)
    dor = node.dor(user)
    source = write_random_file(tmp_path / "just-added.bin", 32 * MiB + 3)
    obj = add_file(dor, user, source)
    node.kill()

    node.restart()
    meta = dor.get_meta(obj.obj_id)
    assert meta is not None
    assert (meta.c_hash, meta.size, meta.owner_iid) == (obj.c_hash, 32 * MiB + 3, user.iid)
    target = dor.get_content(obj.obj_id, user, tmp_path / "downloads" / "just-added.bin")
    assert sha256_file(target) == sha256_file(source) == obj.c_hash
    assert [o.obj_id for o in assert_store_consistent(node, dor)] == [obj.obj_id]
    assert_catalog_works(dor, user, tmp_path)


def test_kill_between_content_and_record(node_process: NodeProcess, user: Keystore, tmp_path: Path) -> None:
    """What a crash between the content file's rename and the record's insert leaves (a content file without a
    record, and a temp file) is removed at the next start; the objects that exist keep their content."""
    node = node_process
    node.publish(user)
    dor = node.dor(user)
    kept = add_file(dor, user, write_random_file(tmp_path / "kept.bin", MiB))
    node.kill()

    orphan = write_random_file(tmp_path / "orphan.bin", MiB)
    orphan_hash = sha256_file(orphan)
    planted = node.dor_dir / "content" / orphan_hash[:2] / orphan_hash
    planted.parent.mkdir(exist_ok=True)
    planted.write_bytes(orphan.read_bytes())
    (node.dor_dir / "tmp" / "upload-0123456789abcdef01234567").write_bytes(b"partial")

    node.restart()
    assert not planted.exists()
    assert [o.obj_id for o in assert_store_consistent(node, dor)] == [kept.obj_id]
    # the same bytes can be added properly now
    again = add_file(dor, user, orphan)
    assert again.c_hash == orphan_hash
    assert sha256_file(dor.get_content(again.obj_id, user, tmp_path / "downloads" / "again.bin")) == orphan_hash
    assert len(assert_store_consistent(node, dor)) == 2


def test_repeated_kills_during_uploads(node_process: NodeProcess, user: Keystore, tmp_path: Path) -> None:
    """Three crashes in a row, each during an upload, with complete adds in between: only complete adds remain."""
    node = node_process
    node.publish(user)
    dor = node.dor(user)
    expected = []
    for round_ in range(3):
        expected.append(add_file(dor, user, write_random_file(tmp_path / f"round-{round_}.bin", MiB + round_)))
        upload = StreamingUpload(node.dor(user), user.identity, 64 * MiB, 16 * MiB).start()
        try:
            wait_for(lambda: any(p.stat().st_size > 0 for p in node.temp_files()), 10, "upload bytes on disk")
            node.kill()
        finally:
            upload.join()
        assert upload.result is None
        node.restart()
        objects = assert_store_consistent(node, dor)
        assert sorted(o.obj_id for o in objects) == sorted(o.obj_id for o in expected)


def test_sigterm_during_upload(
    node_process_factory: Callable[..., NodeProcess], user: Keystore, tmp_path: Path
) -> None:
    """A graceful stop while an upload streams: the upload is answered 503 "Node is stopping" (after the stop grace),
    the node exits 0 promptly with no traceback or ERROR in its log, and the upload leaves nothing."""
    node = node_process_factory(start=False)
    node.service_args = ["--stop-grace", "1"]
    node.start()
    node.publish(user)
    dor = node.dor(user)
    upload = StreamingUpload(node.dor(user), user.identity, BIG, RATE / 2).start()
    try:
        wait_for(lambda: any(p.stat().st_size >= 4 * MiB for p in node.temp_files()), 10, "upload bytes on disk")
        began = time.monotonic()
        code = node.stop(signal.SIGTERM, timeout=20)
        elapsed = time.monotonic() - began
    finally:
        upload.join()
    assert code == 0, node.output()
    assert elapsed < 5, f"graceful stop took {elapsed:.1f} s"  # --stop-grace 1, then 503 and stopped
    assert "Node stopped." in node.stdout()
    assert "Traceback" not in node.stderr() and " ERROR " not in node.stderr(), node.output()
    assert upload.result is None
    assert isinstance(upload.error, UnavailableError), repr(upload.error)
    assert upload.error.reason == "Node is stopping" and upload.error.status == 503  # type: ignore[attr-defined]
    assert node.temp_files() == [], "a graceful stop should remove the cancelled upload's temp file"

    node.restart()
    assert dor.search(data_type="E2EStream") == []
    assert assert_store_consistent(node, dor) == []
    assert_catalog_works(dor, user, tmp_path)


def test_kill_during_download(node_process: NodeProcess, user: Keystore, tmp_path: Path) -> None:
    """A download cut off by the node's crash leaves nothing at the download path (and no partial file); after a
    restart the object downloads completely."""
    node = node_process
    node.publish(user)
    dor = node.dor(user)
    source = write_random_file(tmp_path / "download-me.bin", 64 * MiB)
    obj = add_file(dor, user, source)
    target = tmp_path / "downloads" / "download-me.bin"

    def progress(done: int, total: int) -> None:
        if done >= 8 * MiB and node.running:
            node.kill()

    with pytest.raises(UnreachableError, match="cut off"):  # a saas error, not a raw httpx one
        dor.get_content(obj.obj_id, user, target, progress=progress)
    assert not node.running
    assert not target.exists()
    assert list(target.parent.iterdir()) == []

    node.restart()
    assert sha256_file(dor.get_content(obj.obj_id, user, target)) == obj.c_hash
    assert [o.obj_id for o in assert_store_consistent(node, dor)] == [obj.obj_id]


def clone_processes(marker: str) -> list[int]:
    """Live processes whose environment says they clone for an add-gpp (`SAAS_GPP_CLONE=<marker...>`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
                stat = (entry / "stat").read_bytes()
            except OSError:
                continue
            if any(v.startswith(f"SAAS_GPP_CLONE={marker}".encode()) for v in env) and b") Z" not in stat:
                found.append(int(entry.name))
    return found


def test_kill_during_add_gpp_clone(node_process: NodeProcess, user: Keystore, tmp_path: Path) -> None:
    """kill -9 while add-gpp clones (from a server that never answers): the node starts again, the clone's folder
    in dor/tmp is removed and the git processes the crashed node left are killed."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:  # accept and never answer: git waits
        with contextlib.suppress(OSError):
            while True:
                held.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    node = node_process
    node.publish(user)
    url = f"http://127.0.0.1:{server.getsockname()[1]}/adapters.git"

    def add_gpp() -> None:
        with contextlib.suppress(Exception), DORProxy(node.address, user) as dor:  # the node dies under it
            dor.add_gpp_data_object(url, "0" * 40, "abc", "default", user.identity)

    threading.Thread(target=add_gpp, daemon=True).start()
    tmp = node.dor_dir / "tmp"
    marker = str(tmp.resolve())
    wait_for(lambda: clone_processes(marker) and any(p.is_dir() for p in tmp.iterdir()), 20, "git cloning")
    node.kill(only_the_node=True)
    left = clone_processes(marker)
    assert left, "git outlived the node (it is killed at the next start)"
    node.restart()
    wait_for(lambda: not clone_processes(marker), 5, "the crashed node's git processes killed")
    assert list(tmp.iterdir()) == []
    dor = node.dor(user)
    assert_store_consistent(node, dor)
    assert_catalog_works(dor, user, tmp_path)
    server.close()
    for connection in held:
        connection.close()


def test_a_dashboard_session_survives_a_kill(node_process: NodeProcess, user: Keystore) -> None:
    node = node_process
    node.publish(user)
    node_iid = node.keystore.iid
    with httpx.Client(base_url=node.url, timeout=30, trust_env=False) as browser:
        token = LoginToken.create(user, node_iid).to_string()
        signed_in = browser.post("/api/v1/dashboard/login", json={"token": token}, headers={HEADER_CSRF: "login"})
        assert signed_in.status_code == 200, signed_in.text
        node.kill()  # right after the answer: nothing of a graceful stop
        node.restart()
        session = browser.get("/api/v1/dashboard/session").json()
        assert session["signed_in"] and session["iid"] == user.iid and session["csrf"] == signed_in.json()["csrf"]
        assert browser.get("/api/v1/rti/job").status_code == 200
