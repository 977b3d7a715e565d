"""Celery tasks: thin shells over workers.pipeline, which tests call directly."""
from __future__ import annotations

import os

from celery import shared_task
from celery.signals import worker_process_init, worker_ready

from app.core import mail, retention
from app.core.jobs import TASK_NAME
from workers import pipeline, recovery


@shared_task(name=TASK_NAME, bind=True, acks_late=True, ignore_result=True, max_retries=None)
def process_job(self, job_id: int) -> str:
    # node:pid names the worker (for the staff view) and the pool process (for the lease)
    outcome = pipeline.run_job(_services(), job_id, f"{self.request.hostname}:{os.getpid()}")
    if isinstance(outcome, pipeline.RetryLater):
        raise self.retry(countdown=outcome.seconds)
    return outcome


@shared_task(name="portal.retention_reminders", ignore_result=True)
def retention_reminders() -> int:
    return retention.send_reminders(_services())


@shared_task(name="portal.import_notices", ignore_result=True)
def import_notices() -> int:
    return mail.send_import_notices(_services())


@shared_task(name="portal.failure_digests", ignore_result=True)
def failure_digests() -> int:
    return mail.send_failure_digests(_services())


@shared_task(name="portal.free_staging", ignore_result=True)
def free_staging() -> int:
    return retention.free_staging(_services())


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    # a forked child must not share the parent's database sockets
    _services().db.dispose()


@worker_ready.connect
def _start_recovery(sender=None, **_kwargs) -> None:
    services = _services()
    recovery.start(services, sender.hostname, services.config["WORKER_CONCURRENCY"])


def _services():
    from workers.worker import services  # built once per worker process, from the settings

    return services
