"""The Celery application of a configuration: broker, queues and the settings that keep
a run from running twice (docs/DISTRIBUTED.md explains each)."""

from __future__ import annotations

import socket
import threading
from typing import Any

from ..config import Config
from ..errors import ScriptMonitorError
from ..store.postgres import mask_url

TASK = "script_monitor.run"


class BrokerError(ScriptMonitorError):
    """The broker cannot be reached (exit 2; the run is not made locally instead)."""


def default_hostname() -> str:
    return f"script-monitor@{socket.gethostname()}"


def transport_options(config: Config) -> dict[str, Any]:
    """Redis keeps a copy of a message a worker has taken (kombu's "ack emulation", two
    MULTI/EXEC round trips per message, about a tenth of a run's CPU) only when
    ``celery.visibility_timeout`` asks for its redelivery.  Otherwise a taken message is
    the worker's alone, as the claim and ``execution.claim_timeout`` need: a worker that
    dies before claiming its run leaves the run to be marked lost (and retried) by the
    claim timeout; a worker that stops, or loses its connection, puts back the messages
    it has not run itself."""
    options: dict[str, Any] = {}
    if config.settings.celery.visibility_timeout is not None:
        options["visibility_timeout"] = config.settings.celery.visibility_timeout
    else:
        options["ack_emulation"] = False
    if config.settings.celery.master_name:  # Redis Sentinel
        options["master_name"] = config.settings.celery.master_name
    return options


_IMPORTING = threading.Lock()


def make_app(config: Config) -> Any:
    with _IMPORTING:  # Celery's lazy module breaks when threads import it at once
        from celery import Celery

    settings = config.settings.celery
    app = Celery("script_monitor", set_as_current=False)
    app.conf.update(
        broker_url=settings.broker_url,
        task_default_queue=settings.queue,
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_time_limit=None,
        task_soft_time_limit=None,
        broker_transport_options=transport_options(config),
        # Reaching the broker at start is checked by check_broker (exit 2); after that,
        # retries: 2 for a command sending runs, unbounded for a worker (commands/worker.py).
        broker_connection_retry_on_startup=False,
        broker_connection_retry=True,
        broker_connection_max_retries=2,
        # A run is recorded through the store, not through its message: a lost broker
        # connection must not end the runs in progress (their messages are refused by
        # the claim when redelivered).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_redirect_stdouts=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
    )
    scheme = settings.broker_url.partition("://")[0]
    if scheme in ("redis", "rediss", "sentinel"):
        app.conf.broker_transport = redis_transport(sentinel=scheme == "sentinel")
    if scheme == "rediss":  # kombu turns TLS on by the scheme, which a transport class hides
        app.conf.broker_use_ssl = redis_tls(settings.broker_url)
    return app


def redis_tls(url: str) -> dict[str, Any]:
    """The TLS options kombu reads from a ``rediss://`` URL: its ``ssl_cert_reqs``,
    ``ssl_ca_certs``, ``ssl_certfile`` and ``ssl_keyfile`` parameters, or, without
    any, kombu's default (TLS without checking the server's certificate, with its
    warning)."""
    from kombu import Connection

    return dict(Connection(url).ssl or {})


def redis_transport(sentinel: bool = False) -> type:
    """kombu's Redis transport (its Sentinel one with ``sentinel``), with two changes
    for a broker lost while runs are in progress:

    - a channel closed after its connection was (the worker closes the channel and
      puts their unacknowledged messages back) raises a connection error, which
      Celery rides out, instead of an AttributeError, which ends the worker;
    - with ack emulation (``celery.visibility_timeout`` set), a run that ends while
      the broker is away is forgotten by the worker all the same: its message could
      not be acknowledged, and if the worker kept counting it as in progress, a worker
      whose every slot was busy would never ask the broker for another message, not
      even once it is back.  The message stays unacknowledged in Redis (if it kept it)
      and comes back after the visibility timeout, where the claim refuses it."""
    if sentinel not in _TRANSPORTS:
        import logging

        from kombu.transport import redis, virtual
        from redis.exceptions import ConnectionError as Lost

        channel = redis.SentinelChannel if sentinel else redis.Channel
        transport = redis.SentinelTransport if sentinel else redis.Transport
        log = logging.getLogger("script_monitor.worker")

        class SafeQoS(redis.QoS):
            def ack(self, delivery_tag: Any) -> None:
                try:
                    super().ack(delivery_tag)
                except Lost as e:
                    virtual.QoS.ack(self, delivery_tag)  # this worker's own count
                    log.warning(
                        "a finished run's message could not be acknowledged (%s): the"
                        " broker keeps it, and its claim refuses it if it comes back",
                        e,
                    )

        class SafeChannel(channel):  # type: ignore[valid-type,misc]
            QoS = SafeQoS

            def _connparams(self, asynchronous: bool = False) -> Any:
                if self.connection.client is None:
                    raise Lost("the broker connection is closed")
                return super()._connparams(asynchronous)

        class Transport(transport):  # type: ignore[valid-type,misc]
            Channel = SafeChannel

        _TRANSPORTS[sentinel] = Transport
    return _TRANSPORTS[sentinel]


_TRANSPORTS: dict[bool, type] = {}


def check_broker(app: Any, url: str, timeout: float = 5) -> None:
    """Raise BrokerError (exit 2, URL masked) unless the broker answers."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as e:
        raise BrokerError(f"cannot reach the broker {mask_url(url)}: {_reason(e, url)}") from None


def _reason(e: Exception, url: str) -> str:
    from urllib.parse import urlsplit

    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    password = urlsplit(url).password
    text = text.replace(url, mask_url(url))
    return text.replace(password, "***") if password else text
