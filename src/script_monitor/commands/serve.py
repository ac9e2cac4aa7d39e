"""serve: the web dashboard, the JSON API and Prometheus metrics (docs/WEB.md).

The web libraries are imported here, inside the command, so that no other command
pays for them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
from types import ModuleType

from ..errors import UsageError
from . import load

WEB_MODULES = ("starlette", "uvicorn", "jinja2", "prometheus_client")


def cmd_serve(args: argparse.Namespace) -> int:
    config = load(args)
    web = config.settings.web
    host = web.host if args.host is None else args.host
    port = web.port if args.port is None else args.port
    from ..tokens import MIN_PUBLIC, resolve
    from ..web.security import is_loopback

    tokens = resolve(config)  # ConfigError (exit 2) naming the file and line
    unix = getattr(args, "socket", None)
    if unix is None and not is_loopback(host):
        if not tokens:
            raise UsageError(
                f"refusing to serve on {host}: an address other than loopback (127.0.0.1, ::1, "
                "localhost) needs a token; set web.token in config.yaml or "
                "SCRIPT_MONITOR_WEB_TOKEN, or serve on 127.0.0.1 behind a reverse proxy"
            )
        weak = [t for t in tokens if len(t.value) < MIN_PUBLIC]
        if weak:
            raise UsageError(
                f"refusing to serve on {host}: the token '{weak[0].identity.name}' "
                f"({weak[0].where}) is shorter than {MIN_PUBLIC} characters; use a long random "
                "one, e.g. from: python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
            )
    _require_web_modules()
    import uvicorn

    from ..web.app import create_app
    from ..web.limits import uvicorn_options
    from ..web.security import Security
    from ..web.service import Service
    from .schedule import self_command

    if unix is not None:
        sock = _listen_unix(unix)
        where = f"unix:{sock.getsockname()}"
    else:
        sock = _listen(host, port)
        port = sock.getsockname()[1]
        where = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
    security = Security(
        host if unix is None else "localhost",
        port,
        tokens,
        web.metrics_auth,
        web.allowed_hosts,
        config.state_dir,
        unix=unix is not None,
    )
    service = Service(config, self_command())
    app = create_app(service, security)
    _setup_logging()
    print(f"script-monitor: serving {where} for {config.root}", flush=True)
    if not tokens and unix is None:
        print(
            "script-monitor: no token is set, so every local account and process may read "
            "the logs and start runs here; set web.token or serve on --socket PATH "
            "(see docs/WEB.md)",
            file=sys.stderr,
            flush=True,
        )
    elif tokens and min(len(t.value) for t in tokens) < MIN_PUBLIC:
        print(
            f"script-monitor: warning: a web token is short; use {MIN_PUBLIC} or more "
            "random characters",
            file=sys.stderr,
        )

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await super().shutdown(sockets)
            if unix is not None:  # here: uvicorn re-raises SIGTERM once it has stopped
                with contextlib.suppress(OSError):
                    os.unlink(unix)

    server = Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            proxy_headers=True,
            forwarded_allow_ips="127.0.0.1",
            server_header=False,
            timeout_graceful_shutdown=3,
            **uvicorn_options(),
        )
    )
    server.run(sockets=[sock])
    return 0


def _listen_unix(path: str) -> socket.socket:
    """A listening unix socket at ``path``, mode 0600 from the start (umask 077 while
    it is created); a stale socket file is replaced, any other file is not."""
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise UsageError(f"cannot listen on {path}: {e.strerror}") from None
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise UsageError(f"cannot listen on {path}: it exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: a leftover of a server that was killed
        else:
            raise UsageError(f"cannot listen on {path}: another server is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {path}: {e.strerror}") from None
    finally:
        os.umask(old)
    sock.set_inheritable(False)
    return sock


def _require_web_modules() -> None:
    import importlib.util

    missing = [m for m in WEB_MODULES if _missing(importlib.util, m)]
    if missing:
        raise UsageError(
            f"serve needs the web extra ({', '.join(missing)} not installed): "
            "pip install 'script-monitor[web]'"
        )


def _missing(util: ModuleType, name: str) -> bool:
    try:
        return util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a clear error (exit 2) saying why not."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)  # IPv4 first for localhost
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(False)
    return sock


def _setup_logging() -> None:
    logger = logging.getLogger("script_monitor.web")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("script-monitor: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
