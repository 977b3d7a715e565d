"""The worker: `upload-portal worker` (which runs `python -m workers`) or `celery -A workers.worker worker`.
It is handed the services built from the settings, never a Flask app."""
from __future__ import annotations

import logging
import os
import sys
import time

from app.core import config
from app.core.queue import make_celery
from app.core.services import Services

services = Services.from_config(config.load())
celery = make_celery(services.config)


class _Unrecoverable(logging.Handler):
    """Notes Celery's "Unrecoverable error", after which it exits. A broker restart can cause one:
    kombu loses its Redis connection while restoring unacknowledged messages (celery/celery#10205)."""

    seen = False

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.CRITICAL and record.getMessage().startswith("Unrecoverable error"):
            _Unrecoverable.seen = True


def main(beat: bool) -> None:
    services.config["DATA_DIR"].mkdir(parents=True, exist_ok=True)  # the beat schedule lives there
    from converters.registry import warm_up

    warm_up()  # once, before the pool forks: every pool process starts with the readers loaded
    logging.getLogger("celery.worker").addHandler(_Unrecoverable())
    started = time.monotonic()
    try:
        celery.worker_main(["worker", "--loglevel=INFO", f"--concurrency={services.config['WORKER_CONCURRENCY']}",
                            f"--hostname=portal-{os.getpid()}@%h", *(["--beat"] if beat else [])])
    except SystemExit:
        if not _Unrecoverable.seen:
            raise
    # worker_main returns (Celery 5.7 hands back click's exit code instead of raising SystemExit)
    # once the worker has stopped; after an unrecoverable error, that must not end the worker.
    if _Unrecoverable.seen:
        restart_after_unrecoverable_error(beat, ran_for=time.monotonic() - started)


def restart_after_unrecoverable_error(beat: bool, ran_for: float) -> None:
    """Start afresh in this same process (same pid, so the same node name, still PID 1 in a
    container), with back-off: its startup sweep queues again what the broken connection left.
    The back-off grows while restarts follow each other, and starts over after ten quiet minutes."""
    earlier = 0 if ran_for > 600 else int(os.environ.get("UPLOAD_PORTAL_WORKER_RESTARTS", "0"))
    restarts = earlier + 1
    delay = min(30, 2 ** restarts)
    print(f"upload-portal: the worker stopped on an unrecoverable broker error; restart {restarts} in {delay} s",
          file=sys.stderr, flush=True)
    time.sleep(delay)
    os.environ["UPLOAD_PORTAL_WORKER_RESTARTS"] = str(restarts)
    os.execv(sys.executable, [sys.executable, "-m", "workers", *(["--beat"] if beat else [])])
