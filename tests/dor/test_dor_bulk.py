"""Bulk content (issue 21): large objects move through the proxy and the node intact, downloads leave the node by
sendfile in its worker threads (through the loop when they are all busy), a client that goes away frees its
sender and the content file, and the proxy's own HTTP path turns every failure into the usual errors with nothing
left behind."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from saas.core.errors import InsufficientStorageError, InvalidInputError, UnreachableError
from saas.core.signing import sign_request
from saas.dor.proxy import ContentMismatchError, DORProxy
from saas.dor.upload import BodyHash, upload_head
from saas.rest import bulk
from saas.rest.proxy import API_PREFIX
from tests.waiting import wait_until

SIZE = 5 * 1024 * 1024 + 123  # more than two of the pipeline's buffers
NODE_IID = "0" * 64


@pytest.fixture(scope="module")
def content() -> bytes:
    return os.urandom(SIZE)


@pytest.fixture
def big(add: Callable, content: bytes) -> Any:
    return add(content, access_restricted=True)


def _sendfile_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("saas-sendfile")}


def test_large_content_round_trips_with_progress(
    dor_as: Callable, users: Any, write_file: Callable, content: bytes, tmp_path: Path
) -> None:
    proxy = dor_as(users.alice)
    sent: list[tuple[int, int]] = []
    obj = proxy.add_data_object(
        write_file(content), users.alice.identity, False, False, "Blob", "bin", progress=lambda *a: sent.append(a)
    )
    assert obj.c_hash == hashlib.sha256(content).hexdigest()
    assert sent[-1] == (SIZE, SIZE)
    received: list[tuple[int, int]] = []
    target = proxy.get_content(
        obj.obj_id, users.alice, tmp_path / "out" / "x.bin", progress=lambda *a: received.append(a)
    )
    assert target.read_bytes() == content
    assert received[-1] == (SIZE, SIZE)
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]  # no temp file left


def test_a_large_download_is_written_past_the_page_cache(
    dor_as: Callable, users: Any, big: Any, content: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download of at least `DIRECT_MIN` bytes leaves (nearly) nothing in the page cache: its full buffers went
    to the disk directly (`saas.core.direct`); the bytes are the same and the c_hash checked as before."""
    from tests.core.test_direct import resident_pages

    monkeypatch.setattr(bulk, "DIRECT_MIN", 1024 * 1024)
    target = dor_as(users.alice).get_content(big.obj_id, users.alice, tmp_path / "direct.bin")
    assert resident_pages(target) <= 1  # the tail's last page
    assert target.read_bytes() == content
    monkeypatch.setattr(bulk, "DIRECT_MIN", SIZE + 1)  # below the threshold: through the cache
    small = dor_as(users.alice).get_content(big.obj_id, users.alice, tmp_path / "cached.bin")
    assert resident_pages(small) == (SIZE + 4095) // 4096


def test_an_upload_uses_a_hash_made_beforehand_only_if_it_hashed_the_file_it_sends(
    dor_as: Callable, users: Any, write_file: Callable, content: bytes
) -> None:
    """The CLI hashes the file while it starts (`BodyHash(b"", path)`: the content's hash, which a streamed
    upload's commit names); the proxy uses that only for the same file, and a file changed since is refused by the
    node (it received other bytes than the commit names) with nothing stored."""
    proxy = dor_as(users.alice)
    path = write_file(content)
    hashed = BodyHash(b"", path)
    assert hashed.result() == (hashlib.sha256(content).hexdigest(), len(content))
    obj = proxy.add_data_object(path, users.alice.identity, False, False, "Early", "bin", body_hash=hashed)
    assert obj.c_hash == hashlib.sha256(content).hexdigest()

    # Another file, or a hash of a whole body (head included, what a node of an earlier release wants signed):
    # the proxy hashes the content it sends itself.
    copy = write_file(content[::-1])
    reversed_obj = proxy.add_data_object(copy, users.alice.identity, False, False, "Early", "bin", body_hash=hashed)
    assert reversed_obj.c_hash == hashlib.sha256(content[::-1]).hexdigest()
    head = upload_head(users.alice.iid, [], "Whole", "bin", False, False)
    whole = BodyHash(head, path)
    other = proxy.add_data_object(path, users.alice.identity, False, False, "Whole", "bin", body_hash=whole)
    assert (other.data_type, other.c_hash) == ("Whole", obj.c_hash)

    # The file changed after it was hashed (in size, or only in its bytes): the node discards what it received.
    before = proxy.statistics().objects
    grown = BodyHash(b"", path)
    grown.result()
    path.write_bytes(content + b"more")
    with pytest.raises(InvalidInputError, match="changed"):
        proxy.add_data_object(path, users.alice.identity, False, False, "Grown", "bin", body_hash=grown)
    changed = BodyHash(b"", path)
    changed.result()
    path.write_bytes(b"x" * (len(content) + 4))
    with pytest.raises(InvalidInputError, match="changed"):
        proxy.add_data_object(path, users.alice.identity, False, False, "Changed", "bin", body_hash=changed)
    assert proxy.statistics().objects == before


def test_downloads_leave_the_node_by_sendfile(node: Any, users: Any, send: Callable, big: Any) -> None:
    response = send(users.alice, "GET", f"/dor/{big.obj_id}/content")
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == big.c_hash
    assert _sendfile_threads()  # the node (in this process) sent it from a zero-copy thread
    assert wait_until(lambda: node.node.rest.senders.busy == 0, 10, interval=0.02, what="every sender free")


@pytest.mark.parametrize(
    ("header", "start", "end"), [("bytes=3000000-4999999", 3000000, 5000000), ("bytes=-7", -7, None)]
)
def test_ranges_of_large_content(
    users: Any, send: Callable, big: Any, content: bytes, header: str, start: int, end: int | None
) -> None:
    response = send(users.alice, "GET", f"/dor/{big.obj_id}/content", headers={"range": header})
    assert response.status_code == 206
    assert response.content == content[start:end]


def test_when_every_sender_is_busy_downloads_go_through_the_loop(
    node: Any, users: Any, send: Callable, big: Any, content: bytes
) -> None:
    senders = node.node.rest.senders
    senders.busy += senders.limit  # as if that many slow clients held them
    try:
        full = send(users.alice, "GET", f"/dor/{big.obj_id}/content")
        part = send(users.alice, "GET", f"/dor/{big.obj_id}/content", headers={"range": "bytes=100-2999999"})
    finally:
        senders.busy -= senders.limit
    assert full.content == content
    assert part.status_code == 206
    assert part.content == content[100:3000000]


def _open_files_of(path: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(fd)
        except OSError:
            pass
    return found


def test_a_client_that_goes_away_mid_download_frees_its_sender_and_the_file(
    node: Any, users: Any, add: Callable, send: Callable
) -> None:
    content = os.urandom(48 * 1024 * 1024)  # far more than the socket buffers take
    obj = add(content, access_restricted=True)
    path = API_PREFIX + f"/dor/{obj.obj_id}/content"
    headers = sign_request(users.alice, "GET", path, node.node.iid)
    request = f"GET {path} HTTP/1.1\r\nhost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(node.address) as sock:
        sock.sendall(request.encode())
        assert sock.recv(65536)  # the head and the first bytes
        assert wait_until(lambda: node.node.rest.senders.busy == 1, 10, interval=0.02, what="one sender busy")
    stored = node.node.dor.content_path(obj.c_hash)
    assert wait_until(lambda: node.node.rest.senders.busy == 0, 10, interval=0.02, what="the sender freed")
    assert wait_until(lambda: not _open_files_of(stored), 10, interval=0.02, what="the content file closed")
    again = send(users.alice, "GET", f"/dor/{obj.obj_id}/content", headers={"range": "bytes=0-9"})
    assert again.content == content[:10]


# -- the proxy's HTTP path against a node that misbehaves ------------------------------------------------------


@pytest.fixture
def fake_node() -> Iterator[Callable[[bytes, bool], tuple[str, int]]]:
    """`fake_node(answer, drain)`: a server on 127.0.0.1 that reads a request head, sends `answer` and (with
    `drain`) half-closes and reads whatever the client still sends before closing."""
    servers: list[socket.socket] = []

    def start(answer: bytes, drain: bool = False) -> tuple[str, int]:
        server = socket.create_server(("127.0.0.1", 0))
        servers.append(server)

        def serve() -> None:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    data = conn.recv(65536)
                    if not data:
                        return
                    head += data
                conn.sendall(answer)
                if drain:
                    conn.shutdown(socket.SHUT_WR)
                    conn.settimeout(10)
                    while conn.recv(1 << 20):
                        pass

        threading.Thread(target=serve, daemon=True).start()
        return server.getsockname()[:2]

    yield start
    for server in servers:
        server.close()


def test_a_download_cut_off_is_unreachable_and_leaves_nothing(fake_node: Callable, users: Any, tmp_path: Path) -> None:
    address = fake_node(
        b"HTTP/1.1 200 OK\r\ncontent-length: 10000000\r\nsaas-c-hash: " + b"a" * 64 + b"\r\n\r\n" + b"x" * 5000
    )
    with DORProxy(address, users.alice, node_iid=NODE_IID) as proxy, pytest.raises(UnreachableError, match="cut off"):
        proxy.get_content("b" * 64, users.alice, tmp_path / "downloads" / "out.bin")
    assert list((tmp_path / "downloads").iterdir()) == []


def test_a_download_of_other_bytes_is_a_mismatch_and_leaves_nothing(
    fake_node: Callable, users: Any, tmp_path: Path
) -> None:
    body = os.urandom(3 * 1024 * 1024)
    claimed = hashlib.sha256(b"something else").hexdigest().encode()
    address = fake_node(
        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nsaas-c-hash: %s\r\n\r\n" % (len(body), claimed) + body
    )
    with DORProxy(address, users.alice, node_iid=NODE_IID) as proxy, pytest.raises(ContentMismatchError):
        proxy.get_content("b" * 64, users.alice, tmp_path / "downloads" / "out.bin")
    assert list((tmp_path / "downloads").iterdir()) == []


def test_an_error_the_node_answers_before_reading_the_upload_is_raised_as_such(
    fake_node: Callable, users: Any, write_file: Callable
) -> None:
    envelope = b'{"reason":"Not enough free space","id":"e1","details":{}}'
    answer = b"HTTP/1.1 507 Insufficient Storage\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(
        envelope
    )
    address = fake_node(answer + envelope, True)
    with DORProxy(address, users.alice, node_iid=NODE_IID) as proxy, pytest.raises(InsufficientStorageError) as e:
        proxy.add_data_object(write_file(os.urandom(8 * 1024 * 1024)), users.alice.identity, False, False, "B", "bin")
    assert e.value.reason == "Not enough free space"


def test_an_upload_to_no_node_is_unreachable(users: Any, write_file: Callable) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = s.getsockname()[:2]  # bound, never listening: refused
        with (
            DORProxy(address, users.alice, node_iid=NODE_IID) as proxy,
            pytest.raises(UnreachableError, match=r"Could not connect to 127\.0\.0\.1:\d+: connection refused"),
        ):
            proxy.add_data_object(write_file(b"data"), users.alice.identity, False, False, "B", "bin")


def test_an_upload_whose_file_changed_size_is_refused_and_nothing_is_stored(
    node: Any, users: Any, write_file: Callable, files: Callable, catalog: Callable
) -> None:
    before = catalog(node)
    source = write_file(os.urandom(3 * 1024 * 1024))
    head = b'{"owner_iid": "%s", "data_type": "B", "data_format": "bin"}\n' % users.alice.iid.encode()
    size = source.stat().st_size + 1000  # what the file had when it was hashed, say
    path = API_PREFIX + "/dor/add-c"
    headers = sign_request(users.alice, "POST", path, node.node.iid, "f" * 64)
    headers |= {"content-type": "application/octet-stream", "content-length": str(len(head) + size)}
    with bulk.Exchange(node.address, 30) as exchange, open(source, "rb") as f:
        exchange.start("POST", path, headers)
        with pytest.raises(InvalidInputError, match="changed"):
            bulk.send(exchange, head, f, size)
    assert wait_until(lambda: not files(node)["tmp"], 10, interval=0.02, what="the temp file removed")
    assert catalog(node) == before


def test_an_empty_object_round_trips(dor_as: Callable, users: Any, write_file: Callable, tmp_path: Path) -> None:
    proxy = dor_as(users.alice)
    obj = proxy.add_data_object(write_file(b""), users.alice.identity, True, False, "Empty", "bin")
    assert obj.c_hash == hashlib.sha256(b"").hexdigest()
    target = proxy.get_content(obj.obj_id, users.alice, tmp_path / "downloads" / "empty.bin")
    assert target.read_bytes() == b""


def test_without_sendfile_threads_downloads_go_through_the_loop(
    node_factory: Callable, users: Any, write_file: Callable, content: bytes, tmp_path: Path
) -> None:
    from saas.nodedb.proxy import NodeDBProxy

    plain = node_factory("plain", http_sendfile_threads=0)
    with NodeDBProxy(plain.address) as db:
        db.update_identity(users.alice.identity)
    with DORProxy(plain.address, users.alice) as proxy:
        obj = proxy.add_data_object(write_file(content), users.alice.identity, True, False, "Blob", "bin")
        target = proxy.get_content(obj.obj_id, users.alice, tmp_path / "downloads" / "x.bin")
    assert target.read_bytes() == content
    assert plain.node.rest.senders.busy == 0
    assert plain.node.rest.senders._pool is None  # no zero-copy thread was ever started


def test_the_service_flag_sets_the_sendfile_threads(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "import argparse\n"
        "from saas_cli.commands import service\n"
        "parser = argparse.ArgumentParser(); sub = parser.add_subparsers(dest='command'); service.register(sub)\n"
        "print(parser.parse_args(['service', '--http-sendfile-threads', '0']).http_sendfile_threads)\n"
        "try:\n"
        "    parser.parse_args(['service', '--http-sendfile-threads', '-1'])\n"
        "except SystemExit as e:\n"
        "    print('refused', e.code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["0", "refused", "2"], done.stderr
