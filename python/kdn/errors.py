"""Errors: every failed library call raises kdn.Error carrying the call's kdn_status and the
library's message for it (kdn_last_error, which is per thread, read right after the call)."""
import enum

from . import _lib


class Status(enum.IntEnum):
    """kdn_status (include/kdn/kdn.h)."""
    OK = 0
    INVALID_ARG = 1
    IO = 2
    NOT_FOUND = 3
    CORRUPT = 4
    UNSUPPORTED = 5
    MODEL_MISMATCH = 6
    NO_MEMORY = 7
    NO_DEVICE = 8
    CUDA = 9
    NO_SPACE = 10
    INTERNAL = 11


class Error(Exception):
    """A kdn call failed. `status` is the kdn_status (a Status), `status_name` its C name
    ("KDN_E_CORRUPT"), `message` the library's message ("layer 3 V block: checksum mismatch")."""

    def __init__(self, status, message):
        try:
            status = Status(status)
            name = "KDN_OK" if status == Status.OK else "KDN_E_" + status.name
        except ValueError:
            name = "KDN_E_UNKNOWN"
        self.status = status
        self.status_name = name
        self.message = message
        super().__init__(f"{name}: {message}")


class InvalidArgument(Error, ValueError):
    """KDN_E_INVALID_ARG, from the library or from the package's own checks of what it is given
    (shapes, dtypes, devices, bounds the C descriptor cannot express)."""

    def __init__(self, message):
        super().__init__(Status.INVALID_ARG, message)


def check(status, what=None):
    """Raises Error for a failed status (with the calling thread's message), else returns."""
    if status == Status.OK:
        return
    raw = _lib.library().kdn_last_error()
    message = raw.decode("utf-8", "replace") if raw else ""
    if what:
        message = f"{what}: {message}" if message else what
    if status == Status.INVALID_ARG:
        raise InvalidArgument(message)
    raise Error(status, message)
