"""How omero-py's and Ice's exceptions reach the researcher."""
from __future__ import annotations

import pytest

from .requirements import require_omero_py

require_omero_py()

import Glacier2  # noqa: E402
import Ice  # noqa: E402
import omero  # noqa: E402

from app.omero.base import OmeroError, PermissionDenied, ServerUnreachable, SessionExpired  # noqa: E402
from app.omero.omeropy_errors import UploadCorrupted, translate_errors  # noqa: E402


@pytest.mark.parametrize("error, expected, joining", [
    (omero.RemovedSessionException(None, None, "gone"), SessionExpired, False),
    (omero.SessionTimeoutException(None, None, "idle"), SessionExpired, False),
    (Glacier2.SessionNotExistException(), SessionExpired, False),
    (Ice.ObjectNotExistException(), SessionExpired, False),
    (Glacier2.PermissionDeniedException("Password check failed"), SessionExpired, True),
    (omero.WrappedCreateSessionException("removed", False, 0, "RemovedSessionException"), SessionExpired, True),
    (omero.WrappedCreateSessionException("busy", True, 1000, "DatabaseBusyException"), ServerUnreachable, True),
    (Ice.ConnectionRefusedException(), ServerUnreachable, False),
    (Ice.ConnectTimeoutException(), ServerUnreachable, False),
    (Ice.DNSException(), ServerUnreachable, False),
    (Ice.ConnectionLostException(), ServerUnreachable, False),
    (omero.DatabaseBusyException(), ServerUnreachable, False),
    (omero.SecurityViolation(None, None, "not a member"), PermissionDenied, False),
    (omero.ReadOnlyGroupSecurityViolation(None, None, "read-only"), PermissionDenied, False),
    (omero.ChecksumValidationException(), UploadCorrupted, False),
])
def test_known_errors_become_the_boundarys(error, expected, joining):
    with pytest.raises(expected) as caught:
        with translate_errors(joining=joining, group=lambda: "'Lab' (id 5)"):
            raise error
    assert caught.value.__cause__ is error
    assert caught.value.transient == (expected in (ServerUnreachable, UploadCorrupted))


def test_an_expired_session_says_what_to_do():
    with pytest.raises(SessionExpired, match="Your OMERO session has expired: sign in again, then retry"):
        with translate_errors():
            raise omero.RemovedSessionException(None, None, "gone")


def test_a_permission_refusal_names_the_group():
    with pytest.raises(PermissionDenied, match=r"in the OMERO group 'Lab' \(id 5\) \(not a member\)"):
        with translate_errors(group=lambda: "'Lab' (id 5)"):
            raise omero.SecurityViolation(None, None, "not a member")


def test_a_refused_admin_login_is_not_an_expired_session():
    with pytest.raises(OmeroError, match="refused") as caught:
        with translate_errors():
            raise Glacier2.PermissionDeniedException("Password check failed")
    assert type(caught.value) is OmeroError


def test_unknown_errors_pass_through_unchanged():
    with pytest.raises(omero.ApiUsageException):
        with translate_errors():
            raise omero.ApiUsageException(None, None, "a bug of ours")
