"""Writes keystore files in the original middleware's format, from its documented structure (JSON with `iid`,
`profile`, `nonce`, `signature` and encrypted `assets`), for the tests that load and convert them. A real file
written by the original code is in `tests/fixtures/original-keystore/` (its README gives the password)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
import string
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

ORIGINAL_FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "original-keystore"
ORIGINAL_FIXTURE_PASSWORD = "legacy-password"
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def original_fixture() -> Path:
    """The keystore file written by the original code (identity 'legacy user', one GitHub credential)."""
    return next(ORIGINAL_FIXTURE_DIR.glob("*.json"))


def _pem_body(pem: bytes) -> str:
    lines = pem.decode().strip().splitlines()
    return "".join(lines[1:-1])


def _encrypt(master: rsa.RSAPrivateKey, text: str) -> str:
    message = text.encode()
    size = master.key_size // 16
    chunks = [
        master.public_key().encrypt(message[i * size : (i + 1) * size], _OAEP)
        for i in range(math.ceil(len(message) / size))
    ]
    return base64.b64encode(b"".join(chunks)).decode()


def _private(key: Any, password: str | None = None) -> str:
    algorithm = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    return _pem_body(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, algorithm))


def write_original_keystore(
    directory: Path,
    password: str,
    name: str = "old user",
    email: str = "old@example.org",
    content_keys: dict[str, str] | None = None,
    github: dict[str, dict[str, str]] | None = None,
    ssh: dict[str, dict[str, Any]] | None = None,
) -> tuple[Path, ec.EllipticCurvePrivateKey]:
    """An original-format keystore `<directory>/<iid>.json`; returns its path and signing key."""
    directory.mkdir(parents=True, exist_ok=True)
    master = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    s_key = ec.generate_private_key(ec.SECP384R1())
    e_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    iid = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(64))
    content: dict[str, Any] = {
        "iid": iid,
        "profile": {"name": name, "email": email},
        "nonce": 1,
        "assets": {
            "master-key": {"type": "MasterKeyPairAsset", "info": "RSA/2048/x", "pppk": _private(master, password)},
            "signing-key": {
                "type": "KeyPairAsset",
                "info": "EC/secp384r1/384/x",
                "private_key": _encrypt(master, _private(s_key)),
            },
            "encryption-key": {
                "type": "KeyPairAsset",
                "info": "RSA/2048/x",
                "private_key": _encrypt(master, _private(e_key)),
            },
            "content-keys": {
                "type": "ContentKeysAsset",
                "content_keys": _encrypt(master, json.dumps(content_keys or {})),
            },
            "ssh-credentials": {"type": "SSHCredentialsAsset", "credentials": _encrypt(master, json.dumps(ssh or {}))},
            "github-credentials": {
                "type": "GithubCredentialsAsset",
                "credentials": _encrypt(master, json.dumps(github or {})),
            },
        },
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    content["signature"] = s_key.sign(hashlib.sha256(canonical).digest(), ec.ECDSA(hashes.SHA256())).hex()
    path = directory / f"{iid}.json"
    path.write_text(json.dumps(content, indent=4))
    return path, s_key
