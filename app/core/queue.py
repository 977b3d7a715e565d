"""The job queue (Celery) from the settings. The web app sends tasks by name (app.core.jobs); the
workers define them (workers.tasks, loaded by name through `include`)."""
from __future__ import annotations

from collections.abc import Mapping

from celery import Celery
from kombu.transport import sqlalchemy as sqlalchemy_transport


def make_celery(config: Mapping) -> Celery:
    celery = Celery("upload-portal")
    lease = config["JOB_LEASE_SECONDS"]
    celery.conf.update(
        broker_url=config["BROKER_URL"],
        task_ignore_result=True,
        task_acks_late=True,  # a worker that dies mid-job leaves the message to be delivered again
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=config["WORKER_CONCURRENCY"],
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a restarted Redis is waited for, not given up on
        include=["workers.tasks"],
        # `upload-portal worker --beat` (or a separate `celery beat`) sends this once a day
        beat_schedule={"retention-reminders": {"task": "portal.retention_reminders", "schedule": 24 * 3600.0},
                       "staging-hygiene": {"task": "portal.free_staging", "schedule": 24 * 3600.0},
                       "import-notices": {"task": "portal.import_notices", "schedule": 60.0},
                       "failure-digests": {"task": "portal.failure_digests", "schedule": 24 * 3600.0}},
        beat_schedule_filename=str(config["DATA_DIR"] / "celerybeat-schedule"),
    )
    if celery.conf.broker_url.startswith("redis"):
        # Redis gives an unacked message to another worker after this long; the job lease decides
        # whether anyone still works on it, so this only needs to be longer than a lease.
        celery.conf.broker_transport_options = {
            "visibility_timeout": max(3600, 4 * lease),
            # lists per priority, served 0 first: staff can move a job to the front (app.core.jobs)
            "priority_steps": list(range(10)), "sep": ":", "queue_order_strategy": "priority",
        }
    elif celery.conf.broker_url.startswith("sqla+sqlite"):
        # kombu's SQLAlchemy transport passes these to create_engine: wait for the lock, don't fail
        celery.conf.broker_transport_options = {"connect_args": {"timeout": 30}}
        # It polls for messages, once a second by default: a worker then idled up to a second between
        # jobs (a folder of small files took ~0.5 s a job on two workers, mostly waiting). Its options
        # all go to create_engine, so the interval is set on the transport class (kombu's own knob).
        sqlalchemy_transport.Transport.polling_interval = 0.05
    celery.set_default()
    return celery
