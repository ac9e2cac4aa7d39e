"""Channels: named lists of Apprise URLs, ``${VAR}`` expansion, sending one message.

Apprise is imported here, and this module only when something is sent or checked:
it costs about 0.1 s to import and to load its plugins.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from typing import TYPE_CHECKING

from ..config import read_env_file
from ..errors import Problem
from ..masking import Masker

if TYPE_CHECKING:
    from types import ModuleType

    from ..config import Config

VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
TYPES = {  # event -> Apprise notify type (icons and colours where a service has them)
    "failure": "failure",
    "recovery": "success",
    "success": "success",
    "output": "warning",
    "missed": "warning",
    "overdue": "warning",
    "test": "info",
}


def url_id(raw: str) -> str:
    """A short stable id of a configured (unexpanded) URL: what ``accepted`` lists."""
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def environment(config: Config) -> dict[str, str]:
    """The variables ``${VAR}`` may name: the environment, then the global env_file."""
    env = dict(os.environ)
    if config.settings.env_file:
        try:
            env.update(read_env_file(config.path(config.settings.env_file)))
        except OSError:
            pass
    return env


def secrets(config: Config, env: dict[str, str] | None = None) -> list[str]:
    """Every value that must never be shown: env_file values, secret_env values and the
    values of the variables channel URLs use."""
    env = environment(config) if env is None else env
    values: list[str] = []
    settings = config.settings
    if settings.env_file:
        values += _file_values(config, settings.env_file)
    for script in config.scripts.values():
        if script.env_file:
            values += _file_values(config, script.env_file)
        values += [str(v) for k, v in script.env.items() if k in script.secret_env]
    values += [env[k] for k in settings.secret_env if k in env]
    for urls in settings.notifications.channels.values():
        for url in urls:
            values += [env[name] for name in VAR.findall(url) if name in env]
            values += _userinfo_secret(url)
    return values


def _file_values(config: Config, path: str) -> list[str]:
    try:
        return list(read_env_file(config.path(path)).values())
    except OSError:
        return []


def _userinfo_secret(url: str) -> list[str]:
    """A password written into a URL itself (``scheme://user:PASSWORD@host``)."""
    m = re.match(r"^[A-Za-z0-9+._-]+://[^/@:]*:([^/@]+)@", url)
    return [m.group(1)] if m and not VAR.fullmatch(m.group(1)) else []


def masker(config: Config, env: dict[str, str] | None = None) -> Masker:
    return Masker(secrets(config, env))


def expand(url: str, env: dict[str, str]) -> str:
    """``url`` with every ``${VAR}`` replaced; KeyError naming the first unset one."""

    def value(m: re.Match) -> str:
        return env[m.group(1)]

    return VAR.sub(value, url)


def missing_vars(url: str, env: dict[str, str]) -> list[str]:
    return [name for name in VAR.findall(url) if name not in env]


# ---------------------------------------------------------------- Apprise


def load_apprise() -> ModuleType:
    """Apprise, its warnings going to ``_CAPTURE`` only (the reason a URL failed), never
    to our stderr or to a handler the web server's logging set up."""
    import apprise

    log = logging.getLogger("apprise")
    if _CAPTURE not in log.handlers:
        log.addHandler(_CAPTURE)
        log.propagate = False
        log.setLevel(logging.WARNING)
        # Apprise loads all of its plugins on the first URL it reads (0.2 s or more):
        # here, so that no send's time is spent on it.
        apprise.Apprise.instantiate("json://localhost", suppress_exceptions=True)
    return apprise


class _Capture(logging.Handler):
    """Keeps the warnings Apprise logs, per thread, as the reason a URL failed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        kept = getattr(self.local, "kept", None)
        if kept is not None:
            kept.append(record.getMessage())

    def start(self) -> None:
        self.local.kept = []

    def stop(self) -> list[str]:
        kept, self.local.kept = getattr(self.local, "kept", None) or [], None
        return kept


_CAPTURE = _Capture()


def parse_problem(url: str) -> str | None:
    """Why Apprise cannot use ``url`` (offline: nothing is sent), or None."""
    apprise = load_apprise()
    _CAPTURE.start()
    try:
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
    except Exception as e:  # a plugin's own parser may raise on odd input
        plugin, note = None, [str(e)]
    else:
        note = []
    note += _CAPTURE.stop()
    if plugin is None:
        reason = note[-1] if note else "unknown scheme or malformed URL"
        return f"not a usable Apprise URL ({reason})"
    return None


def send_one(url: str, title: str, body: str, event: str, timeout: float) -> str | None:
    """Send through one expanded URL; None when it accepted the message, else why not.

    Apprise's own connect and read timeouts are set to ``timeout`` so that a hanging
    receiver lets the sending thread go eventually; callers wait at most ``timeout``.
    """
    apprise = load_apprise()
    _CAPTURE.start()
    try:
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin is None:
            return "; ".join(_CAPTURE.stop()) or "not a usable Apprise URL"
        limit = max(0.5, float(timeout))
        plugin.socket_connect_timeout = limit
        plugin.socket_read_timeout = limit
        ok = plugin.notify(
            body=body,
            title=title,
            notify_type=TYPES.get(event, "info"),
            body_format=apprise.NotifyFormat.TEXT,
        )
    except Exception as e:  # a plugin bug must not end the delivery of the others
        _CAPTURE.stop()
        return f"{type(e).__name__}: {e}"
    notes = _CAPTURE.stop()
    if ok:
        return None
    return "; ".join(dict.fromkeys(notes)) or "the service did not accept the message"


def channel_problems(config: Config) -> list[Problem]:
    """Channel URLs Apprise cannot parse (offline; imports Apprise: ``validate`` only)."""
    env = environment(config)
    problems = []
    for name, urls in config.settings.notifications.channels.items():
        for i, url in enumerate(urls):
            file, line = config.origin.get(f"channel:{name}:{i}", (None, None))
            unset = [v for v in VAR.findall(url) if v not in env]
            if unset:
                problems.append(
                    Problem.warning(
                        file,
                        line,
                        f"channel '{name}': ${{{unset[0]}}} is not set in the environment or"
                        " the global env_file (the URL is not checked)",
                    )
                )
                continue
            why = parse_problem(VAR.sub(lambda m: env[m.group(1)], url))
            if why:
                problems.append(Problem.error(file, line, f"channel '{name}': {why}"))
    return problems
