"""Errors of the livesnap client.

Each one's text is the whole message the commands print on stderr.
"""


class ClientError(Exception):
    """A failure to report on stderr (exit status 1)."""


class ApiError(ClientError):
    """The API answered with an HTTP error status.

    :param status: the HTTP status code.
    :param code: the ``error.code`` of the JSON body (or the HTTP reason).
    :param message: the ``error.message`` of the JSON body (or the raw body).
    """

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self):
        return "Error (HTTP %s %s): %s" % (self.status, self.code,
                                           self.message)


class ConnectionFailed(ClientError):
    """The API (or the identity service) could not be reached at all."""


class OperationFailed(ClientError):
    """An operation waited for (``--wait``) ended ``failed``."""


class WaitTimeout(ClientError):
    """``--wait`` gave up before the operation ended (exit status 2)."""
