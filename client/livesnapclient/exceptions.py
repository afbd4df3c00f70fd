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
    :param request_id: the ``x-openstack-request-id`` of the answer, the
        key to the conductor's log lines for this request; None if absent.
    """

    def __init__(self, status, code, message, request_id=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id

    def __str__(self):
        text = "Error (HTTP %s %s): %s" % (self.status, self.code,
                                           self.message)
        if self.request_id:
            text += " (request %s)" % self.request_id
        return text


class ConnectionFailed(ClientError):
    """The API (or the identity service) could not be reached at all."""


class OperationFailed(ClientError):
    """An operation waited for (``--wait``) ended ``failed``."""


class WaitTimeout(ClientError):
    """``--wait`` gave up before the operation ended (exit status 2)."""
