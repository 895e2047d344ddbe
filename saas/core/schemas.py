"""Credential assets kept in a keystore. Their secrets never appear in `repr`, logs or CLI output."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from saas.core.errors import CryptoError, InvalidInputError

__all__ = ["GithubCredentials", "SSHCredentials", "decrypt_credentials"]

Credentials = TypeVar("Credentials", bound=BaseModel)


class GithubCredentials(BaseModel):
    """A login and personal access token for cloning private repositories over HTTPS."""

    model_config = ConfigDict(extra="forbid")

    login: str = Field(min_length=1)
    personal_access_token: SecretStr

    def token(self) -> str:
        return self.personal_access_token.get_secret_value()


class SSHCredentials(BaseModel):
    """A login on a remote host with its private key (the key itself, not a path to it).

    `host` may carry a port (`host:port`); `key_path` is where the key came from (informational);
    `home_path` is the remote home directory, if the backend needs it."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1)
    login: str = Field(min_length=1)
    key: SecretStr
    key_path: str | None = None
    home_path: str | None = None

    def private_key(self) -> str:
        return self.key.get_secret_value()

    def host_and_port(self) -> tuple[str, int | None]:
        host, sep, port = self.host.rpartition(":")
        if sep and port.isdigit() and host and not host.endswith(":"):
            return host.strip("[]"), int(port)
        return self.host.strip("[]"), None


async def decrypt_credentials(
    model: type[Credentials], encrypted: str, decrypt: Callable[[bytes], bytes], what: str
) -> Credentials:
    """Credentials a client encrypted for this node (base64 of the encrypted JSON; `RESTProxy.encrypt_*`), decrypted
    in a worker thread with `decrypt` (the node keystore's). Raises `InvalidInputError` if they are not that."""
    try:
        plain = await asyncio.to_thread(decrypt, base64.b64decode(encrypted, validate=True))
        return model.model_validate_json(plain)
    except (CryptoError, ValueError):  # binascii.Error and pydantic's ValidationError are ValueErrors
        raise InvalidInputError(f"{what} must be encrypted for this node's identity") from None
