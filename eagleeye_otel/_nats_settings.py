"""How to reach and authenticate to NATS, read from the environment (:class:`NatsSettings`).

Credentials never stay in a server URL: ``nats://user:password@host`` is split into the host URL and the
credential fields, so every log line and error that shows the URLs shows no secret. Secrets come from a variable or
from a file (``*_FILE``, the Kubernetes secret-volume convention), and are left out of ``repr``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from eagleeye_otel import environment_variables as ev
from eagleeye_otel._env import EnvReader
from eagleeye_otel.errors import ConfigError

__all__ = ["DEFAULT_NATS_URL", "NatsSettings", "nats_settings_from_env", "redact_url"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
"""Where publishers look for NATS when :envvar:`EAGLEEYE_NATS_URL` is unset: the port ``eagle-eye up`` uses."""

_NATS_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})
_URL_SHAPE = "expected [scheme://][user:password@]host[:port]"
_CREDS_MARKERS = (b"BEGIN NATS USER JWT", b"BEGIN USER NKEY SEED")
_MAX_CREDS_BYTES = 64 * 1024


@dataclass(frozen=True)
class NatsSettings:
    """How to reach and authenticate to NATS.

    ``servers`` empty means that no URL was configured; :attr:`urls` then falls back to :data:`DEFAULT_NATS_URL`.
    Servers never hold credentials (:func:`nats_settings_from_env` moves them to the fields), so they can be shown.
    """

    servers: tuple[str, ...] = ()
    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    creds_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def urls(self) -> tuple[str, ...]:
        """The servers to connect to."""
        return self.servers or (DEFAULT_NATS_URL,)

    @property
    def tls(self) -> bool:
        """Whether the connection must use TLS."""
        return (
            self.tls_ca is not None
            or self.tls_cert is not None
            or any(urlsplit(s).scheme in ("tls", "wss") for s in self.servers)
        )


def nats_settings_from_env(env: EnvReader) -> NatsSettings:
    """Read and validate the ``EAGLEEYE_NATS_*`` variables.

    Raises:
        ConfigError: a variable has a value that cannot be used; the error names it and shows no secret.
    """
    servers, url_token, url_user, url_password = _servers(env.get(ev.EAGLEEYE_NATS_URL))
    nats = NatsSettings(
        servers=servers,
        token=env.secret(ev.EAGLEEYE_NATS_TOKEN, ev.EAGLEEYE_NATS_TOKEN_FILE),
        user=env.get(ev.EAGLEEYE_NATS_USER),
        password=env.secret(ev.EAGLEEYE_NATS_PASSWORD, ev.EAGLEEYE_NATS_PASSWORD_FILE),
        creds_file=_creds_file(env),
        tls_ca=env.path(ev.EAGLEEYE_NATS_TLS_CA),
        tls_cert=env.path(ev.EAGLEEYE_NATS_TLS_CERT),
        tls_key=env.path(ev.EAGLEEYE_NATS_TLS_KEY),
    )
    _check_pairs(nats, env)
    if url_token is not None or url_user is not None:
        if nats.token is not None or nats.user is not None or nats.creds_file is not None:
            raise ConfigError(
                ev.EAGLEEYE_NATS_URL, "<has credentials>", "credentials in the URL and in other variables: choose one"
            )
        return NatsSettings(
            servers=servers,
            token=url_token,
            user=url_user,
            password=url_password,
            tls_ca=nats.tls_ca,
            tls_cert=nats.tls_cert,
            tls_key=nats.tls_key,
        )
    return nats


def redact_url(url: str) -> str:
    """``url`` with its credentials hidden, for error messages: ``nats://user:***@host``, a token as ``***@host``.

    Everything between the scheme and the last ``@`` counts as credentials, whatever characters it holds.
    """
    scheme_end = url.find("://")
    start = scheme_end + 3 if scheme_end >= 0 else 0
    at = url.rfind("@")
    if at < start:
        return url
    user, colon, _ = url[start:at].partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{url[:start]}{shown}@{url[at + 1 :]}"


def _servers(value: str | None) -> tuple[tuple[str, ...], str | None, str | None, str | None]:
    """The server URLs without credentials, and the token or user and password they carried."""
    if value is None:
        return (), None, None, None
    servers: list[str] = []
    credentials: set[str] = set()
    for server in (part.strip() for part in value.split(",")):
        if not server:
            continue
        url = server if "://" in server else f"nats://{server}"
        shown = redact_url(server)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:  # the message would quote the URL: raise without it
            parts, port = None, None
        if parts is None:
            raise ConfigError(ev.EAGLEEYE_NATS_URL, shown, _URL_SHAPE)
        if parts.scheme not in _NATS_SCHEMES:
            raise ConfigError(ev.EAGLEEYE_NATS_URL, shown, "the scheme must be one of nats, tls, ws, wss")
        if not parts.hostname or port == 0 or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(ev.EAGLEEYE_NATS_URL, shown, _URL_SHAPE)
        userinfo, at, host = parts.netloc.rpartition("@")
        if at and userinfo:
            if userinfo.startswith(":"):
                raise ConfigError(ev.EAGLEEYE_NATS_URL, shown, "a password needs a user name before it")
            credentials.add(userinfo)
        servers.append(f"{parts.scheme}://{host}")
    if len(credentials) > 1:
        raise ConfigError(ev.EAGLEEYE_NATS_URL, "<has credentials>", "every server must carry the same credentials")
    if not credentials:
        return tuple(servers), None, None, None
    user, colon, password = credentials.pop().partition(":")
    # As nats-py reads a URL: "user:password@" is a user and password, a bare "secret@" a token.
    if colon:
        return tuple(servers), None, user, password
    return tuple(servers), user, None, None


def _creds_file(env: EnvReader) -> Path | None:
    """The credentials file, checked now: nats-py spins forever on a file without a JWT (nats-io/nats.py)."""
    path = env.path(ev.EAGLEEYE_NATS_CREDS)
    if path is None:
        return None
    shown = str(path)
    data, problem = b"", ""
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_CREDS_BYTES + 1)
    except (OSError, ValueError) as error:  # ValueError: a NUL in the path
        problem = f"cannot read it: {getattr(error, 'strerror', None) or type(error).__name__}"
    if problem:
        raise ConfigError(ev.EAGLEEYE_NATS_CREDS, shown, problem)
    if len(data) > _MAX_CREDS_BYTES or not all(marker in data for marker in _CREDS_MARKERS):
        raise ConfigError(ev.EAGLEEYE_NATS_CREDS, shown, "not a NATS credentials file (a user JWT and NKey seed)")
    if importlib.util.find_spec("nkeys") is None:
        raise ConfigError(ev.EAGLEEYE_NATS_CREDS, shown, "needs the nkeys package: pip install 'nats-py[nkeys]'")
    return path


def _check_pairs(nats: NatsSettings, env: EnvReader) -> None:
    password_var = (
        ev.EAGLEEYE_NATS_PASSWORD_FILE if env.get(ev.EAGLEEYE_NATS_PASSWORD_FILE) else ev.EAGLEEYE_NATS_PASSWORD
    )
    if (nats.user is None) != (nats.password is None):
        raise ConfigError(
            password_var if nats.user else ev.EAGLEEYE_NATS_USER,
            "<unset>",
            "user and password must be given together",
        )
    if (nats.tls_cert is None) != (nats.tls_key is None):
        raise ConfigError(
            ev.EAGLEEYE_NATS_TLS_KEY if nats.tls_cert else ev.EAGLEEYE_NATS_TLS_CERT,
            "<unset>",
            "client certificate and key must be given together",
        )
    methods = [m for m in (nats.token, nats.user, nats.creds_file) if m is not None]
    if len(methods) > 1:
        token_var = ev.EAGLEEYE_NATS_TOKEN_FILE if env.get(ev.EAGLEEYE_NATS_TOKEN_FILE) else ev.EAGLEEYE_NATS_TOKEN
        raise ConfigError(
            token_var if nats.token else ev.EAGLEEYE_NATS_CREDS,
            "<set>",
            "choose one of token, user/password or a credentials file",
        )
