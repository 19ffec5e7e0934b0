"""NATS decentralized auth made locally with the ``nkeys`` package: an operator, an account and user JWTs with
publish/subscribe permissions, their ``.creds`` files (what ``nsc`` writes), and the operator-mode server config.

JWT v2 as nats-server reads it: ``base64url(header).base64url(claims).base64url(ed25519 signature)``, header
``{"typ": "JWT", "alg": "ed25519-nkey"}``, each JWT signed by its issuer's nkey (operator signs the account, the
account signs its users).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass(frozen=True)
class Key:
    seed: bytes
    public: str

    @classmethod
    def new(cls, prefix: int) -> Key:
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        return cls(seed, nkeys.from_seed(bytearray(seed)).public_key.decode())

    def sign(self, data: bytes) -> bytes:
        key_pair = nkeys.from_seed(bytearray(self.seed))
        return bytes(key_pair.sign(data))


def _jwt(issuer: Key, subject: str, name: str, nats_claims: dict[str, Any]) -> str:
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject}
    claims["nats"] = nats_claims
    digest = hashlib.new("sha512_256", json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = _b64(issuer.sign(f"{header}.{payload}".encode()))
    return f"{header}.{payload}.{signature}"


@dataclass(frozen=True)
class Account:
    """An operator and one account it signed; :meth:`user` issues users of the account."""

    operator: Key
    key: Key
    operator_jwt: str
    jwt: str

    @classmethod
    def new(cls) -> Account:
        operator, account = Key.new(nkeys.PREFIX_BYTE_OPERATOR), Key.new(nkeys.PREFIX_BYTE_ACCOUNT)
        operator_jwt = _jwt(operator, operator.public, "eagle-eye-test", {"type": "operator", "version": 2})
        limits = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1}
        account_jwt = _jwt(
            operator, account.public, "EAGLE_EYE", {"limits": {**limits, "leaf": -1}, "type": "account", "version": 2}
        )
        return cls(operator, account, operator_jwt, account_jwt)

    def server_config(self, path: Path) -> Path:
        """Write an operator-mode config trusting this operator, the account preloaded in memory."""
        path.write_text(
            f"operator: {self.operator_jwt}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{\n  {self.key.public}: {self.jwt}\n}}\n"
        )
        return path

    def user(
        self,
        name: str,
        path: Path,
        *,
        publish: list[str] | None = None,
        subscribe: list[str] | None = None,
        responses: int = 0,
    ) -> Path:
        """Write ``name``'s ``.creds`` file: a user JWT allowed ``publish``/``subscribe`` (nothing when empty)."""
        user = Key.new(nkeys.PREFIX_BYTE_USER)
        claims: dict[str, Any] = {
            "pub": {"allow": publish} if publish else {"deny": [">"]},
            "sub": {"allow": subscribe} if subscribe else {"deny": [">"]},
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
            "version": 2,
        }
        if responses:
            claims["resp"] = {"max": responses, "ttl": 10_000_000_000}  # nanoseconds
        user_jwt = _jwt(self.key, user.public, name, claims)
        path.write_text(
            f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n"
        )
        path.chmod(0o600)
        return path
