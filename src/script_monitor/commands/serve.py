"""serve: the web dashboard, the JSON API and Prometheus metrics (docs/WEB.md).

The web libraries are imported here, inside the command, so that no other command
pays for them.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

from ..errors import UsageError
from . import load

WEB_MODULES = ("starlette", "uvicorn", "jinja2", "prometheus_client")


def cmd_serve(args: argparse.Namespace) -> int:
    config = load(args)
    web = config.settings.web
    host = web.host if args.host is None else args.host
    port = web.port if args.port is None else args.port
    from ..web.security import effective_token, is_loopback

    token = effective_token(web.token)
    if not is_loopback(host) and not token:
        raise UsageError(
            f"refusing to serve on {host}: an address other than loopback (127.0.0.1, ::1, "
            "localhost) needs a token; set web.token in config.yaml or "
            "SCRIPT_MONITOR_WEB_TOKEN, or serve on 127.0.0.1 behind a reverse proxy"
        )
    _require_web_modules()
    import uvicorn

    from ..web.app import create_app
    from ..web.security import Security
    from ..web.service import Service
    from .schedule import self_command

    sock = _listen(host, port)
    port = sock.getsockname()[1]
    security = Security(host, port, token, web.metrics_auth, web.allowed_hosts, config.state_dir)
    service = Service(config, self_command())
    app = create_app(service, security)
    _setup_logging()
    shown = f"[{host}]" if ":" in host else host
    print(f"script-monitor: serving http://{shown}:{port}/ for {config.root}", flush=True)
    if token and len(token) < 16:
        print(
            "script-monitor: warning: the web token is short; use 16 or more random characters",
            file=sys.stderr,
        )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            proxy_headers=True,
            forwarded_allow_ips="127.0.0.1",
            server_header=False,
            timeout_graceful_shutdown=3,
        )
    )
    server.run(sockets=[sock])
    return 0


def _require_web_modules() -> None:
    import importlib.util

    missing = [m for m in WEB_MODULES if _missing(importlib.util, m)]
    if missing:
        raise UsageError(
            f"serve needs the web extra ({', '.join(missing)} not installed): "
            "pip install 'script-monitor[web]'"
        )


def _missing(util, name: str) -> bool:
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
