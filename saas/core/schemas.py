"""Credential assets kept in a keystore. Their secrets never appear in `repr`, logs or CLI output."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["GithubCredentials", "SSHCredentials"]


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
