"""Loaded by a worker started with this directory on PYTHONPATH (tests/test_faults.py): the first
time kombu restores unacknowledged messages while some are held, it fails as it does when Redis
goes away mid-restore (celery/celery#10205), so the worker's recovery from Celery's "Unrecoverable
error" is tested every run instead of when the race happens to strike."""
import os

from kombu.transport.virtual import base

_restore = base.QoS.restore_unacked_once


def _restore_fails_once(self, stderr=None):
    if self._delivered and not os.environ.get("PORTAL_TEST_RESTORE_FAILED"):
        os.environ["PORTAL_TEST_RESTORE_FAILED"] = "1"  # kept across the worker's exec restart
        raise AttributeError("'NoneType' object has no attribute 'hostname'")
    return _restore(self, stderr)


base.QoS.restore_unacked_once = _restore_fails_once
