"""``worker``: a Celery worker that runs the scripts of this configuration (docs/DISTRIBUTED.md)."""

from __future__ import annotations

import argparse
import logging
import sys

from ..proc import adopt
from . import load, open_store


def cmd_worker(args: argparse.Namespace) -> int:
    config = load(args)
    from ..distributed.app import TASK, check_broker, default_hostname, make_app
    from ..distributed.worker import Runs, run_claimed
    from ..startup import settle_in

    settings = config.settings
    store = open_store(config)
    store.runs.reap_lost()  # also checks that the store answers and its schema is this version
    app = make_app(config)
    check_broker(app, settings.celery.broker_url)
    # A worker outlives broker restarts: it retries for ever, and Celery logs each try.
    app.conf.broker_connection_max_retries = None
    # Nothing here is controlled through Celery's broadcast channel or rate limits: a
    # worker that neither listens to the one nor keeps the other's buckets spends less
    # on every message (docs/DISTRIBUTED.md).
    app.conf.worker_enable_remote_control = False
    app.conf.worker_disable_rate_limits = True
    hostname = args.hostname or default_hostname()
    queues = [q.strip() for q in (args.queues or settings.celery.queue).split(",") if q.strip()]
    runs = Runs(store, settings.execution.lost_after)

    @app.task(name=TASK, acks_late=True, ignore_result=True)
    def run(message: dict) -> str:
        return run_claimed(config, store, runs, hostname, message)

    settle_in(config.root)
    adopt.become_subreaper()
    from ..distributed.guard import Guardian

    runs.guardian = Guardian()  # the scripts die with this worker (supervise.py)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    log = logging.getLogger("script_monitor.worker")
    log.setLevel(logging.INFO)
    _quiet_celery_notice()
    print(
        f"script-monitor worker {hostname}: queues {', '.join(queues)}, concurrency"
        f" {args.concurrency}, store {store.where}",
        file=sys.stderr,
        flush=True,
    )
    from celery.signals import worker_ready

    def ready(**_: object) -> None:
        log.info("script-monitor worker %s: ready", hostname)

    worker_ready.connect(ready, weak=False)
    worker = app.Worker(
        hostname=hostname,
        queues=queues,
        concurrency=args.concurrency,
        pool="threads",
        loglevel="WARNING",
        without_mingle=True,
        without_gossip=True,
        without_heartbeat=True,
        quiet=True,
    )
    worker.start()
    runs.guardian.stop()
    runs.stop.set()
    store.close()
    return int(worker.exitcode or 0)


def _quiet_celery_notice() -> None:
    """Celery warns on every lost broker connection that it will cancel late-acked
    tasks by default in 6.0; the worker sets that setting itself
    (``worker_cancel_long_running_tasks_on_connection_loss``, distributed/app.py)."""
    import warnings

    from celery.exceptions import CPendingDeprecationWarning

    warnings.filterwarnings(
        "ignore",
        message=r"\s*In Celery 5\.1 we introduced an optional breaking change",
        category=CPendingDeprecationWarning,
    )
