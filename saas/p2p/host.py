"""`P2PHost`: the node's libp2p host — the only module that imports libp2p (DESIGN §7).

Restricted profile: TCP only, Noise only (passed explicitly: libp2p's default also accepts plaintext and secio),
Yamux only, one connection per peer, no built-in bootstrap or discovery, and a listener without SO_REUSEPORT
(the port is ours: a second node on it fails to start). The Ed25519 peer key is persisted in
`<datastore>/p2p/peer.key` (mode 0600), so a node keeps its peer ID across restarts. With a pre-shared key
(`psk`, a closed network) every raw connection, our own peer-ID probe included, is wrapped in libp2p's private
network protection before the Noise handshake, so a peer without the key never gets that far.

Everything runs in the trio thread of a `TrioBridge`; the public methods are asyncio coroutines that take and
return plain data (peer IDs and multiaddrs as strings, messages as JSON-able dicts). libp2p errors are wrapped in
`P2PError` here. Messages are request/response over a fresh stream: one length-prefixed JSON frame each way
(4-byte big-endian length, at most `MAX_FRAME` bytes); every read has a timeout, so a frozen or silent peer costs
a timeout, never a hung task. A truncated frame (a dead sender looks like a clean EOF) is an error.

Protocol handlers run on asyncio: `handler(peer_id, message) -> response`, where `peer_id` is the
Noise-authenticated remote peer ID — the only peer identity callers may trust."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_noise_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.pnet.protector import new_protected_conn
from libp2p.security.security_multistream import SecurityMultistream
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.transport.tcp import tcp as libp2p_tcp
from libp2p.transport.tcp.tcp import TCP

from saas.core.errors import P2PError
from saas.p2p.bridge import TrioBridge

__all__ = ["MAX_FRAME", "Handler", "P2PHost", "load_or_create_key"]

logger = logging.getLogger(__name__)

MAX_FRAME = 16 * 1024 * 1024  # bytes of one JSON message
READ_TIMEOUT = 10.0  # seconds a peer may take to send (the rest of) a frame
HANDLER_TIMEOUT = 30.0  # seconds the asyncio side may take to answer a request

Handler = Callable[[str, dict[str, Any]], Coroutine[Any, Any, dict[str, Any] | None]]
PeerEvent = Callable[[str], Coroutine[Any, Any, None]]


class _NoisyProbeFilter(logging.Filter):
    """libp2p logs an ERROR for every connection that stops after the Noise handshake — which is exactly what a
    peer-ID probe (`P2PHost.probe`) does. Those lines are expected; drop them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("fail to upgrade mux")


logging.getLogger("libp2p.network.swarm").addFilter(_NoisyProbeFilter())


def _reuse_address_only(sock: Any) -> None:
    """libp2p sets SO_REUSEPORT on its listener (for NAT hole punching, which we do not use), so a second node on
    the same P2P port would start and the kernel would split incoming connections between the two. With
    SO_REUSEADDR only, the port is ours: a clash fails the bind (and the start, with the reason)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


if not hasattr(libp2p_tcp, "_set_reuse_flags"):  # pinned libp2p 0.8.1; a new version must keep the port ours
    raise ImportError("libp2p.transport.tcp.tcp._set_reuse_flags is gone: check how libp2p binds its listener")
libp2p_tcp._set_reuse_flags = _reuse_address_only


def _bind_problem(host: str, port: int) -> str:
    """Why `host:port` cannot be bound (e.g. "Address already in use"), found by trying (blocking, brief)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as e:
        return e.strerror or str(e)
    return "address not available"


def load_or_create_key(path: Path) -> KeyPair:
    """The persisted Ed25519 peer key (its 32-byte seed), created with mode 0600 on first use."""
    if path.exists():
        seed = path.read_bytes()
        if len(seed) != 32:
            raise P2PError("The P2P peer key file is corrupted", {"path": str(path)})
        return create_new_key_pair(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    key_pair = create_new_key_pair()
    seed = key_pair.private_key.to_bytes()
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(seed)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
    return key_pair


def tcp_multiaddr(host: str, port: int) -> str:
    """`/ip4/.../tcp/...` (or ip6 / dns4) for a host and port."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"/dns4/{host}/tcp/{port}"
    return f"/ip{ip.version}/{ip}/tcp/{port}"


def parse_peer_multiaddr(text: str) -> tuple[str, str | None]:
    """Split `/ip4/.../tcp/.../p2p/<id>` into the transport part and the peer ID (None if absent)."""
    try:
        addr = multiaddr.Multiaddr(text)
    except Exception as e:
        raise P2PError(f"Invalid multiaddr '{text}'", {"multiaddr": text}) from e
    try:
        peer_id = addr.value_for_protocol("p2p")
    except Exception:
        peer_id = None
    if peer_id:
        return str(addr.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer_id}"))), str(peer_id)
    return str(addr), None


async def _read_exactly(stream: INetStream, n: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < n:
        chunk = await stream.read(n - len(buffer))
        if not chunk:
            raise P2PError("Peer closed the stream in the middle of a message", {"expected": n, "got": len(buffer)})
        buffer += chunk
    return bytes(buffer)


async def read_frame(stream: INetStream, timeout: float = READ_TIMEOUT) -> dict[str, Any]:
    with trio.fail_after(timeout):
        (length,) = struct.unpack(">I", await _read_exactly(stream, 4))
        if length > MAX_FRAME:
            raise P2PError("Peer sent a message that is too large", {"length": length, "max": MAX_FRAME})
        body = await _read_exactly(stream, length)
    message = json.loads(body)
    if not isinstance(message, dict):
        raise P2PError("Peer sent a message that is not a JSON object")
    return message


async def write_frame(stream: INetStream, message: dict[str, Any], timeout: float = READ_TIMEOUT) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise P2PError("Message is too large to send", {"length": len(body), "max": MAX_FRAME})
    with trio.fail_after(timeout):
        await stream.write(struct.pack(">I", len(body)) + body)


def _no_identify(peer_id: ID) -> bool:
    return False


async def _no_auto_connect() -> None:
    return None


class _Notifee(INotifee):
    """Reports connection open/close (per peer) to the asyncio side."""

    def __init__(self, host: P2PHost):
        self._host = host

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        with contextlib.suppress(Exception):  # never break libp2p's notification loop
            self._host._report(self._host.on_connected, str(conn.muxed_conn.peer_id))

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        with contextlib.suppress(Exception):
            peer_id = conn.muxed_conn.peer_id
            if not network.get_connections(peer_id):  # the last connection to that peer is gone
                self._host._report(self._host.on_disconnected, str(peer_id))

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


class P2PHost:
    """A libp2p host on `listen` (bound address) advertising `advertise` (the address other nodes dial)."""

    def __init__(
        self,
        key_path: Path,
        listen: tuple[str, int],
        advertise: tuple[str, int],
        on_connected: PeerEvent | None = None,
        on_disconnected: PeerEvent | None = None,
        psk: str | None = None,
    ):
        self._key_path = key_path
        self._listen = listen
        self._advertise = advertise
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self._psk = psk  # 64 hex characters: libp2p private network (every raw connection wrapped in Salsa20)
        self._handlers: dict[str, Handler] = {}
        self._bridge = TrioBridge()
        self._host: IHost | None = None
        self._key_pair: KeyPair | None = None
        self.peer_id = ""
        self.port = advertise[1]

    # -- lifecycle (asyncio side) -------------------------------------------------------------------------------

    def set_handler(self, protocol: str, handler: Handler) -> None:
        """Serve `protocol`; call before `start`."""
        self._handlers[protocol] = handler

    async def start(self) -> None:
        self._key_pair = await asyncio.to_thread(load_or_create_key, self._key_path)
        self.peer_id = ID.from_pubkey(self._key_pair.public_key).to_base58()
        await self._bridge.start(self._main)

    async def stop(self) -> None:
        await self._bridge.stop()

    @property
    def multiaddrs(self) -> list[str]:
        """The advertised addresses, each ending in `/p2p/<peer id>`."""
        return [f"{tcp_multiaddr(self._advertise[0], self.port)}/p2p/{self.peer_id}"]

    def _new_noise(self, key_pair: KeyPair) -> dict[TProtocol, Any]:
        return {NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=create_noise_key_pair().private_key)}

    async def _main(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        assert self._key_pair is not None
        host = new_host(
            key_pair=self._key_pair,
            sec_opt=self._new_noise(self._key_pair),
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            connection_config=ConnectionConfig(max_connections_per_peer=1),
            psk=self._psk,
        )
        # libp2p's auto-connector dials peerstore peers until ~150 connections (its watermarks cannot switch it
        # off without also pruning every connection); our service decides whom to dial, so it does nothing here.
        host.get_network().auto_connector.maybe_connect = _no_auto_connect  # type: ignore[attr-defined]
        # libp2p runs its Identify protocol on every new connection (a stream, a signed peer record, protobufs):
        # measured here at roughly a third of the CPU a connection costs. Peers are identified by our own
        # identity exchange, and streams negotiate their protocol anyway, so it is switched off.
        host._should_identify_peer = _no_identify  # type: ignore[attr-defined]
        for protocol in self._handlers:
            host.set_stream_handler(TProtocol(protocol), self._serve)
        host.get_network().register_notifee(_Notifee(self))
        listen_ip = socket.gethostbyname(self._listen[0])
        async with host.run([multiaddr.Multiaddr(tcp_multiaddr(listen_ip, self._listen[1]))]):
            if not host.get_transport_addrs():  # libp2p logs a failed listen and runs on without a listener
                address, port = f"{self._listen[0]}:{self._listen[1]}", self._listen[1]
                raise P2PError(
                    f"Cannot listen on {address} (P2P port {port}): {_bind_problem(listen_ip, port)}"
                    " (is another node using this P2P port?)",
                    {"address": address, "port": port},
                )
            self._host = host
            if self._advertise[1] == 0 or self._listen[1] == 0:
                self.port = int(host.get_transport_addrs()[0].value_for_protocol("tcp"))
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._host = None

    def _report(self, callback: PeerEvent | None, peer_id: str) -> None:
        if callback is not None:
            self._bridge.to_asyncio_soon(callback(peer_id))

    # -- serving (trio side) ------------------------------------------------------------------------------------

    async def _serve(self, stream: INetStream) -> None:
        peer_id = str(stream.muxed_conn.peer_id)
        protocol = str(stream.get_protocol())
        handler = self._handlers.get(protocol)
        try:
            if handler is None:
                raise P2PError("No handler", {"protocol": protocol})
            message = await read_frame(stream)
            response = await self._bridge.to_asyncio(handler(peer_id, message), timeout=HANDLER_TIMEOUT)
            await write_frame(stream, response if response is not None else {})
            await stream.close()
        except (Exception, trio.TooSlowError) as e:
            logger.debug("request %s from %s failed: %r", protocol, peer_id, e)
            with contextlib.suppress(Exception):
                await stream.reset()

    # -- requests (asyncio side; the work runs in trio) ---------------------------------------------------------

    async def probe(self, host: str, port: int, timeout: float = 5.0) -> str:
        """The peer ID of whoever listens on host:port, learned by running the Noise handshake ourselves on a raw
        TCP connection (the remote static key is authenticated by the handshake); the connection is then
        dropped. Raises `P2PError` if nobody answers or the handshake fails."""

        async def run() -> str:
            ip = await trio.to_thread.run_sync(socket.gethostbyname, host)
            raw = await TCP().dial(multiaddr.Multiaddr(tcp_multiaddr(ip, port)))
            if self._psk is not None:
                raw = new_protected_conn(raw, self._psk)
            try:
                probe_key = create_new_key_pair()  # a throwaway identity: the probe is not a peer
                secure = await SecurityMultistream(self._new_noise(probe_key)).secure_outbound(raw, None)  # type: ignore[arg-type]
                peer_id = secure.get_remote_peer().to_base58()
                await secure.close()
                return peer_id
            finally:
                with contextlib.suppress(Exception):
                    await raw.close()

        return await self._call(run, timeout, f"probe {host}:{port}")

    async def connect(self, peer_id: str, addrs: list[str], timeout: float = 10.0) -> None:
        """Connect to a peer at any of `addrs` (transport multiaddrs, without /p2p). Clears libp2p's 60 s block
        on peers whose earlier dial failed, so our own retry loop decides when to try again."""

        async def run() -> None:
            host = self._require_host()
            pid = ID.from_base58(peer_id)
            network = host.get_network()
            unblock = getattr(network, "unblock_peer", None)
            if unblock is not None:
                unblock(pid)
            await host.connect(PeerInfo(pid, [multiaddr.Multiaddr(a) for a in addrs]))

        await self._call(run, timeout, f"connect {peer_id}")

    async def disconnect(self, peer_id: str) -> None:
        async def run() -> None:
            await self._require_host().disconnect(ID.from_base58(peer_id))

        with contextlib.suppress(P2PError, TimeoutError):
            await self._call(run, 5.0, f"disconnect {peer_id}")

    async def request(
        self, peer_id: str, protocol: str, message: dict[str, Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send `message` on a new stream of `protocol` to a connected peer and return its answer."""

        async def run() -> dict[str, Any]:
            stream = await self._require_host().new_stream(ID.from_base58(peer_id), [TProtocol(protocol)])
            try:
                await write_frame(stream, message)
                response = await read_frame(stream, timeout)
                await stream.close()
                return response
            except BaseException:
                with contextlib.suppress(Exception):
                    await stream.reset()
                raise

        return await self._call(run, timeout, f"{protocol} to {peer_id}")

    def connected_peers(self) -> list[str]:
        host = self._host
        return [] if host is None else [str(p) for p in host.get_connected_peers()]

    def _require_host(self) -> IHost:
        if self._host is None:
            raise P2PError("P2P host is not running")
        return self._host

    async def _call(self, fn: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
        try:
            return await self._bridge.call(fn, timeout=timeout)
        except P2PError:
            raise
        except TimeoutError as e:
            raise P2PError(f"P2P {what} timed out", {"timeout": timeout}) from e
        except Exception as e:  # libp2p errors stay behind this module
            raise P2PError(f"P2P {what} failed: {type(e).__name__}: {e}") from e
