"""The web server's tokens and roles, without a user database (docs/SECURITY.md).

``web.token`` (or ``SCRIPT_MONITOR_WEB_TOKEN``, which wins) is one admin token named
``admin``; ``web.tokens`` adds named tokens with a role each.  A token's value may be
written in config.yaml, be ``${VAR}`` (from the environment) or come from
``token_file``.  Values are stripped of surrounding white space; a blank one is none.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from .config import Config
from .errors import ConfigError, Problem

TOKEN_ENV = "SCRIPT_MONITOR_WEB_TOKEN"
ROLES = ("viewer", "operator", "admin")  # each may do what the ones before it may
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MIN_PUBLIC = 16  # characters a token needs when the server is reachable beyond loopback
MAX_FILE = 4096  # bytes read from a token_file


class Identity(NamedTuple):
    """Who a request is: the token's name and its role."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        """Whether this identity has ``role`` or a stronger one."""
        return ROLES.index(self.role) >= ROLES.index(role)


ANONYMOUS = Identity("anonymous", "admin")  # no token configured: loopback trusts everyone


class Token(NamedTuple):
    identity: Identity
    value: str
    where: str  # file:line of its setting, for messages


def resolve(config: Config, environ: Any = os.environ) -> list[Token]:
    """Every configured token with its value; ConfigError (naming the file and line) when
    a ``${VAR}`` is not set, a token_file cannot be read, or two tokens are the same."""
    tokens, problems = _collect(config, environ)
    if problems:
        raise ConfigError(problems)
    return tokens


def token_problems(config: Config, environ: Any = os.environ) -> list[Problem]:
    """What ``serve`` would refuse about the tokens, as warnings (for ``validate``: a
    ``${VAR}`` may be set only in the server's own environment)."""
    return [Problem.warning(p.file, p.line, p.message) for p in _collect(config, environ)[1]]


def token_values(config: Config, environ: Any = os.environ) -> list[str]:
    """The values that can be found (for masking); problems are left to ``resolve``."""
    return [t.value for t in _collect(config, environ)[0]]


def _collect(config: Config, environ: Any) -> tuple[list[Token], list[Problem]]:
    web = config.settings.web
    tokens: list[Token] = []
    problems: list[Problem] = []
    file, line = config.origin.get("setting:web.token", (config.root / "config.yaml", None))
    single = environ.get(TOKEN_ENV)
    if single is None and web.token is not None:
        single = _expand(web.token, environ, file, line, "web.token", problems)
    if single is not None and single.strip():
        tokens.append(Token(Identity("admin", "admin"), single.strip(), _at(file, line)))
    for i, entry in enumerate(web.tokens):
        file, line = config.origin.get(f"web.tokens:{i}", (config.root / "config.yaml", None))
        label = f"web.tokens[{i}] '{entry.name}'"
        if entry.token_file is not None:
            value = _read_file(config.path(entry.token_file), file, line, label, problems)
        else:
            value = _expand(entry.token or "", environ, file, line, label, problems)
        if value is None:
            continue
        if not value.strip():
            problems.append(Problem.error(file, line, f"{label}: the token is blank"))
            continue
        tokens.append(Token(Identity(entry.name, entry.role), value.strip(), _at(file, line)))
    values = [t.value for t in tokens]
    has_single = single is not None and bool(single.strip())
    for t in tokens[1:] if has_single else []:
        if t.identity.name == "admin":
            problems.append(
                Problem.error(None, None, f"{t.where}: the name 'admin' is web.token's")
            )
    if len(set(values)) < len(values):
        problems.append(Problem.error(file, line, "web.tokens: two tokens have the same value"))
    return tokens, problems


def _at(file: Path | None, line: int | None) -> str:
    return f"{file}:{line}" if line else str(file)


def _expand(
    text: str, environ: Any, file: Path | None, line: int | None, label: str, problems: list
) -> str | None:
    missing = [name for name in VAR.findall(text) if name not in environ]
    if missing:
        problems.append(Problem.error(file, line, f"{label}: ${{{missing[0]}}} is not set"))
        return None
    return VAR.sub(lambda m: environ[m.group(1)], text)


def _read_file(
    path: Path, file: Path | None, line: int | None, label: str, problems: list
) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        problems.append(Problem.error(file, line, f"{label}: cannot read {path}: {e.strerror}"))
        return None
    if len(data) > MAX_FILE:
        problems.append(Problem.error(file, line, f"{label}: {path} is not a token (too long)"))
        return None
    return data.decode("utf-8", "replace")
