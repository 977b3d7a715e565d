"""Celery tasks: thin shells over workers.pipeline, which tests call directly."""
from __future__ import annotations

import os

from celery import shared_task
from celery.signals import worker_process_init, worker_ready
from flask import current_app

from app import retention
from app.jobs import TASK_NAME
from workers import pipeline, recovery


@shared_task(name=TASK_NAME, bind=True, acks_late=True, ignore_result=True, max_retries=None)
def process_job(self, job_id: int) -> str:
    # node:pid names the worker (for the staff view) and the pool process (for the lease)
    outcome = pipeline.run_job(current_app, job_id, f"{self.request.hostname}:{os.getpid()}")
    if isinstance(outcome, pipeline.RetryLater):
        raise self.retry(countdown=outcome.seconds)
    return outcome


@shared_task(name="portal.retention_reminders", ignore_result=True)
def retention_reminders() -> int:
    return retention.send_reminders(current_app)


@shared_task(name="portal.free_staging", ignore_result=True)
def free_staging() -> int:
    return retention.free_staging(current_app)


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    # a forked child must not share the parent's database sockets
    from workers.worker import flask_app

    flask_app.extensions["db"].dispose()


@worker_ready.connect
def _start_recovery(sender=None, **_kwargs) -> None:
    from workers.worker import flask_app

    recovery.start(flask_app, sender.hostname, flask_app.config["WORKER_CONCURRENCY"])
