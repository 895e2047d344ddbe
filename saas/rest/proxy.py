"""The signed HTTP client every proxy builds on (sync, httpx).

A proxy talks to one node. Requests that act as an identity are signed with `sign_request` for that node (its
identity ID is fetched once from `GET /db/node`). Error envelopes come back as the exception classes of
`saas.core.errors`: a 404 is a `RemoteError` that is also a `NotFoundError`, and so on."""

from __future__ import annotations

import functools
import json
import os
import re
import ssl
from collections.abc import Iterable
from typing import Any, TypeVar

import httpx

from saas.core import errors
from saas.core.helpers import parse_address
from saas.core.signing import EMPTY_BODY_SHA256, Signer, sha256_hex, sign_request

__all__ = ["API_PREFIX", "RESTProxy", "error_from_response", "transport_error_text"]

API_PREFIX = "/api/v1"

_Proxy = TypeVar("_Proxy", bound="RESTProxy")

_CATEGORY_BY_STATUS: dict[int, type[errors.SaaSError]] = {
    400: errors.InvalidInputError,
    401: errors.AuthenticationError,
    403: errors.AuthorisationError,
    404: errors.NotFoundError,
    409: errors.ConflictError,
    413: errors.TooLargeError,
    416: errors.InvalidInputError,
    422: errors.InvalidInputError,
    429: errors.LimitReachedError,
    502: errors.UnreachableError,
    503: errors.UnavailableError,
    507: errors.InsufficientStorageError,
}
_REMOTE_CLASSES: dict[type[errors.SaaSError], type[errors.RemoteError]] = {}


def error_words(error: BaseException) -> str:
    """What went wrong with a connection, in words ("connection refused"): the OS error under httpx's and
    httpcore's wrappers says it best; never a class name."""
    cause: BaseException | None = error
    words = ""
    while cause is not None and not words:
        if isinstance(cause, OSError) and cause.errno is not None:
            words = os.strerror(cause.errno) if cause.errno > 0 else (cause.strerror or "")
        cause = cause.__cause__ or cause.__context__
    if not words:
        words = re.sub(r"^\[Errno -?\d+\]\s*", "", str(error).strip()).rstrip(".")
    return (words[:1].lower() + words[1:]) if words else "the connection failed"


def transport_error_text(error: httpx.TransportError, address: str) -> str:
    """A failed connection in words: "Could not connect to 127.0.0.1:5999: connection refused" (no class names)."""
    words = error_words(error)
    if isinstance(error, httpx.ConnectError):
        return f"Could not connect to {address}: {words}"
    return f"Lost the connection to {address}: {words}"


def _remote_class(category: type[errors.SaaSError] | None) -> type[errors.RemoteError]:
    if category is None:
        return errors.RemoteError
    if category not in _REMOTE_CLASSES:
        _REMOTE_CLASSES[category] = type(f"Remote{category.__name__}", (errors.RemoteError, category), {})
    return _REMOTE_CLASSES[category]


def error_from_response(response: httpx.Response) -> errors.RemoteError:
    try:
        body = response.json()
        reason, details, error_id = str(body["reason"]), body.get("details") or {}, body.get("id")
    except (ValueError, KeyError, TypeError):
        reason, details, error_id = f"HTTP {response.status_code} from node", {}, None
    cls = _remote_class(_CATEGORY_BY_STATUS.get(response.status_code))
    return cls(reason, details, error_id, status=response.status_code)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context (httpx's default trust store) for every proxy: building one loads the CA bundle (~0.1 s of
    CPU), which would otherwise dominate a network-wide call that makes a proxy per node."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


class RESTProxy:
    def __init__(
        self,
        address: str | tuple[str, int],
        keystore: Signer | None = None,
        timeout: float = 60.0,
        node_iid: str | None = None,
    ):
        self.address = parse_address(address)
        self.keystore = keystore
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        self.timeout = timeout
        self._client = httpx.Client(
            base_url=f"http://{host}:{port}", timeout=timeout, trust_env=False, verify=_tls_context()
        )
        self._node_iid = node_iid  # known already (e.g. from a verified node record), or asked for once

    def close(self) -> None:
        self._client.close()

    def __enter__(self: _Proxy) -> _Proxy:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    @property
    def node_iid(self) -> str:
        """The identity ID of the node this proxy talks to (asked once)."""
        if self._node_iid is None:
            self._node_iid = str(self.request("GET", "/db/node").json()["identity"]["id"])
        return self._node_iid

    def encrypt_github_credentials(self, credentials: Any) -> str:
        """GitHub credentials (`saas.core.schemas.GithubCredentials`) encrypted for this node's identity, base64:
        only the node can read them, and only in memory."""
        from saas.core.signing import canonical_json

        return self._encrypt_for_node(
            canonical_json({"login": credentials.login, "personal_access_token": credentials.token()})
        )

    def encrypt_ssh_credentials(self, credentials: Any) -> str:
        """SSH credentials (`saas.core.schemas.SSHCredentials`) encrypted for this node's identity, base64: the node
        keeps them only in this form (and in memory while it uses them)."""
        from saas.core.signing import canonical_json

        document = {
            "host": credentials.host,
            "login": credentials.login,
            "key": credentials.private_key(),
            "key_path": credentials.key_path,
            "home_path": credentials.home_path,
        }
        return self._encrypt_for_node(canonical_json(document))

    def _encrypt_for_node(self, plain: bytes) -> str:
        import base64

        from saas.core.identity import Identity

        node = Identity.model_validate(self.request("GET", "/db/node").json()["identity"])
        if self._node_iid is not None and node.id != self._node_iid:
            raise errors.AuthenticationError("The node answered with another identity than expected")
        node.verify()
        return base64.b64encode(node.encrypt(plain)).decode()

    def _signer(self, signer: Signer | None) -> Signer:
        signer = signer or self.keystore
        if signer is None:
            raise errors.ConfigError("This request must be signed: give the proxy a keystore")
        return signer

    def signed_headers(
        self, method: str, path: str, signer: Signer | None = None, body_sha256: str = EMPTY_BODY_SHA256
    ) -> dict[str, str]:
        """The headers that sign a request to `path` (under `API_PREFIX`, no query) as `signer`, else the keystore."""
        return sign_request(self._signer(signer), method, API_PREFIX + path, self.node_iid, body_sha256)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json_body: Any = None,
        content: bytes | Iterable[bytes] | None = None,
        body_sha256: str | None = None,
        signer: Signer | None = None,
        signed: bool = False,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send a request (signed when `signed` or `signer` is given); raises the mapped error for 4xx/5xx."""
        headers = dict(headers or {})
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode("utf-8")
            headers["content-type"] = "application/json"
        request = self._client.build_request(method, API_PREFIX + path, params=params, content=content, headers=headers)
        if signed or signer is not None:
            if body_sha256 is None:
                body_sha256 = sha256_hex(content) if isinstance(content, bytes) else EMPTY_BODY_SHA256
            node_iid = self.node_iid
            request.headers.update(
                sign_request(self._signer(signer), method, request.url.raw_path.decode("ascii"), node_iid, body_sha256)
            )
        try:
            response = self._client.send(request, stream=stream)
        except httpx.TimeoutException as e:
            raise errors.UnreachableError(
                f"Node at {self.address[0]}:{self.address[1]} did not answer in time",
                {"address": f"{self.address[0]}:{self.address[1]}"},
            ) from e
        except httpx.TransportError as e:
            address = f"{self.address[0]}:{self.address[1]}"
            raise errors.UnreachableError(transport_error_text(e, address), {"address": address}) from e
        if response.status_code >= 400:
            if stream:
                response.read()
                response.close()
            raise error_from_response(response)
        return response

    def get_json(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()
