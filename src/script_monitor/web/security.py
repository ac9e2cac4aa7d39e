"""Who may use the server, and from where (docs/WEB.md).

- Binding: loopback by default; any other address needs a token (checked by ``serve``).
- Host: every request's ``Host`` must name the address served (or a configured
  ``web.allowed_hosts`` name), so a DNS-rebinding page cannot reach it.
- Origin: a state-changing request whose browser ``Origin`` (or ``Sec-Fetch-Site``)
  says it comes from another site is refused, token or not.
- Token: ``Authorization: Bearer TOKEN`` for the API; the dashboard asks for it once
  and keeps a signed session cookie.  Each token has a name and a role (``tokens``);
  signing out revokes the session's id for good.
- Guessing: failed tokens are counted per client address (``Throttle``).
- CSRF: a request made with the session cookie that changes state must carry the
  session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``).

Nothing here imports the web framework: it works on plain header values.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..tokens import ANONYMOUS, TOKEN_ENV, Identity, Token

__all__ = ["TOKEN_ENV", "Identity", "Security", "Throttle"]

COOKIE = "sm_session"
SESSION_DAYS = 7
SECRET_FILE = "web-session.key"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PORT = re.compile(r"[0-9]{1,5}")
MAX_FAILURES = 10  # failed tokens from one address within FAILURE_WINDOW ...
FAILURE_WINDOW = 60.0  # seconds
BLOCK_FOR = 60.0  # ... block that address for this long


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and the name localhost."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("", "0.0.0.0", "::")


def host_wellformed(value: str) -> bool:
    """Whether a Host header is a host name or address with an optional port at all
    (a malformed one is a 400; a well-formed one naming another server a 403)."""
    return _split_host(value) is not None


def _split_host(value: str) -> tuple[str, int | None] | None:
    """('name', port) from a Host header or an allowed_hosts entry; None if malformed."""
    value = value.strip().lower()
    if not value or any(c in value for c in "/\\@ \t?#"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    elif value.count(":") > 1:  # a bare IPv6 address
        name, port_text = value, None
    else:
        name, _, port_text = value.partition(":")
        port_text = port_text or None
    if port_text is None:
        return name, None
    if not PORT.fullmatch(port_text) or int(port_text) > 65535:
        return None
    return name, int(port_text)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Security:
    """The checks, configured for one server."""

    def __init__(
        self,
        host: str,
        port: int,
        tokens: list[Token],
        metrics_auth: bool,
        allowed_hosts: list[str],
        state_dir: Path,
        unix: bool = False,
    ):
        self.port = port
        self.unix = unix  # a unix socket: any port in Host is fine
        self.tokens = tokens
        self.token = bool(tokens)  # whether a token is needed at all
        self.metrics_auth = metrics_auth
        self.wildcard = is_wildcard(host)
        self.names: set[str] = {host.strip("[]").lower()}
        if is_loopback(host) or self.wildcard or unix:
            self.names |= {"localhost", "127.0.0.1", "::1"}
        if self.wildcard:
            for name in (socket.gethostname(), socket.getfqdn()):
                self.names.add(name.lower())
        self.extra: set[tuple[str, int | None]] = set()
        for entry in allowed_hosts:
            parsed = _split_host(entry)
            if parsed is not None:
                self.extra.add(parsed)
        self.key = _session_key(state_dir)
        self.by_tag = {self._tag(t.value): t.identity for t in tokens}
        self.revoked: set[str] = set()
        self.throttle = Throttle()

    # ------------------------------------------------------------ Host and Origin

    def host_ok(self, host: str | None, https: bool = False) -> bool:
        """Whether a Host header names this server."""
        if host is None:
            return False
        parsed = _split_host(host)
        if parsed is None:
            return False
        name, port = parsed
        if (name, None) in self.extra or (name, port) in self.extra:
            return True
        if port is None:
            port = 443 if https else 80
        if port != self.port and not self.unix:
            return False
        return name in self.names or (self.wildcard and _is_ip(name))

    def origin_ok(self, origin: str | None, fetch_site: str | None, host: str | None) -> bool:
        """Whether a state-changing request may come from where the browser says it does.
        ValueError for an Origin that is not a URL at all (the caller answers 400)."""
        if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
            return False
        if origin is None:
            return True  # not sent by a browser (curl, Prometheus, scripts)
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (sandboxed frames, file://) and anything odd
        if host is not None and parts.netloc.lower() == host.strip().lower():
            return True
        parsed = _split_host(parts.netloc)
        return parsed is not None and ((parsed[0], None) in self.extra or parsed in self.extra)

    # ------------------------------------------------------------ tokens

    def bearer(self, authorization: str | None) -> Identity | None:
        """The identity whose token an ``Authorization: Bearer`` header carries."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.identity_of_token(value)

    def identity_of_token(self, value: str) -> Identity | None:
        """The identity of a token value (stripped, as configured values are)."""
        value = value.strip()
        found = None
        for t in self.tokens:  # every one compared: the time does not tell which matched
            if value and hmac.compare_digest(value.encode(), t.value.encode()):
                found = t.identity
        return found

    # ------------------------------------------------------------ sessions

    def _tag(self, token: str) -> str:
        """A fingerprint of the token: sessions made with another token are not valid."""
        return hmac.new(self.key, b"token:" + token.encode(), hashlib.sha256).hexdigest()[:32]

    def new_session(self, token: str | None = None) -> dict[str, Any]:
        """A new session; signed in with ``token`` when it is given."""
        return {
            "csrf": secrets.token_urlsafe(24),
            "auth": self._tag(token.strip()) if token else "",
            "sid": secrets.token_urlsafe(12),
            "t": int(time.time()),
        }

    def session_identity(self, session: dict[str, Any] | None) -> Identity | None:
        """Who a session was signed in as (None: not signed in, revoked, or the token
        it was opened with is no longer configured)."""
        if not self.tokens or not session:
            return None
        tag = session.get("auth")
        if not isinstance(tag, str) or not tag or session.get("sid") in self.revoked:
            return None
        for known, identity in self.by_tag.items():
            if hmac.compare_digest(tag, known):
                return identity
        return None

    def authed(self, session: dict[str, Any] | None) -> bool:
        """Whether a session was opened with a current token and not signed out."""
        return self.session_identity(session) is not None

    def identity(self, session: dict[str, Any] | None, bearer: Identity | None) -> Identity | None:
        """Who a request is: its bearer token, else its session; everyone without tokens."""
        if not self.tokens:
            return ANONYMOUS
        return bearer or self.session_identity(session)

    def encode(self, session: dict[str, Any]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(session, separators=(",", ":")).encode())
        sig = hmac.new(self.key, body, hashlib.sha256).digest()
        return f"{body.decode()}.{base64.urlsafe_b64encode(sig).decode().rstrip('=')}"

    def decode(self, cookie: str | None) -> dict[str, Any] | None:
        """The session in a cookie value, or None when it is missing, forged, malformed
        or old.  The signature is checked before the body is parsed."""
        if not cookie or "." not in cookie or len(cookie) > 4096:
            return None
        body, _, sig = cookie.rpartition(".")
        want = hmac.new(self.key, body.encode(), hashlib.sha256).digest()
        try:
            got = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
            if not hmac.compare_digest(got, want):
                return None
            data = json.loads(base64.urlsafe_b64decode(body))
        except (ValueError, TypeError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        issued = data.get("t")
        if not isinstance(issued, int) or time.time() - issued > SESSION_DAYS * 86400:
            return None
        if not isinstance(data.get("csrf"), str):
            return None
        return data

    @staticmethod
    def csrf_ok(session: dict[str, Any] | None, value: str | None) -> bool:
        if not session or not value:
            return False
        return hmac.compare_digest(value.encode(), str(session["csrf"]).encode())


class Throttle:
    """Failed tokens per client address: after MAX_FAILURES within FAILURE_WINDOW
    seconds, that address is refused (429) for BLOCK_FOR seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failures: dict[str, deque[float]] = {}
        self.blocked: dict[str, float] = {}

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again (0: it may now)."""
        until = self.blocked.get(client)
        if until is None:
            return 0
        left = until - self.clock()
        if left <= 0:
            del self.blocked[client]
            return 0
        return max(1, int(left + 0.999))

    def fail(self, client: str) -> bool:
        """Count a failure; True when it starts a block (reported once)."""
        now = self.clock()
        seen = self.failures.setdefault(client, deque())
        seen.append(now)
        while seen and seen[0] < now - FAILURE_WINDOW:
            seen.popleft()
        if len(seen) >= MAX_FAILURES:
            del self.failures[client]
            self.blocked[client] = now + BLOCK_FOR
            return True
        if len(self.failures) > 10_000:  # many addresses: forget the oldest
            self.failures.pop(next(iter(self.failures)))
        return False


def _session_key(state_dir: Path) -> bytes:
    """The key that signs session cookies, kept in the state folder so that sessions
    outlive a restart; a fresh random key when it cannot be kept there."""
    path = state_dir / SECRET_FILE
    key = secrets.token_bytes(32)
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        try:
            os.link(tmp, path)  # never replaces a key another server already uses
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        data = path.read_bytes()
    except OSError:
        return key
    return data if len(data) >= 32 else key
