"""Errors the conductor turns into JSON API answers.

Each class carries the HTTP status and a short machine-readable ``code``;
the message is meant for the tenant, so it never holds a stack trace.
"""


class LivesnapException(Exception):
    status = 500
    code = 'internal_error'
    message = 'An unexpected error occurred.'

    def __init__(self, message=None, **kwargs):
        if message is None:
            message = self.message % kwargs if kwargs else self.message
        super().__init__(message)


class BadRequest(LivesnapException):
    status = 400
    code = 'bad_request'
    message = 'The request is not valid.'


class Unauthorized(LivesnapException):
    status = 401
    code = 'unauthorized'
    message = 'Authentication is required.'


class Forbidden(LivesnapException):
    status = 403
    code = 'forbidden'
    message = 'The policy does not allow this action.'


class QuotaExceeded(LivesnapException):
    status = 403
    code = 'quota_exceeded'
    message = 'Quota exceeded.'


class NotFound(LivesnapException):
    status = 404
    code = 'not_found'
    message = 'The resource could not be found.'


class Conflict(LivesnapException):
    status = 409
    code = 'conflict'
    message = 'The request conflicts with the current state.'


class DiskBusy(Conflict):
    code = 'disk_busy'
    message = ('Disk %(disk)s of server %(server)s is busy with operation '
               '%(operation)s; try again when it has finished.')


class RequestTooLarge(LivesnapException):
    status = 413
    code = 'request_too_large'
    message = 'The request body is too large.'


class RateLimited(LivesnapException):
    status = 429
    code = 'rate_limited'
    message = 'Too many snapshot operations; try again later.'

    def __init__(self, message=None, retry_after=1, **kwargs):
        super().__init__(message, **kwargs)
        #: seconds, sent as the Retry-After header
        self.retry_after = int(retry_after)


class HostDown(LivesnapException):
    status = 503
    code = 'host_down'
    message = ('The agent of host %(host)s is not reporting; no work can be '
               'sent to it now.')


class AgentUnsupported(HostDown):
    code = 'agent_unsupported'
    message = ('The agent of host %(host)s serves agent RPC API '
               '%(version)s, older than %(minimum)s, the oldest this '
               'conductor serves; no work can be sent to it until it is '
               'upgraded.')


class NotCancellable(Conflict):
    code = 'not_cancellable'
    message = ('Operation %(operation)s cannot be cancelled: %(reason)s')


class ChainTooDeep(Conflict):
    code = 'chain_too_deep'
    message = ('Disk %(disk)s already has %(depth)d layers under its live '
               'image and the limit is %(limit)d: long backing chains slow '
               'every read. Delete older snapshots first.')


class SnapshotProtected(Conflict):
    code = 'snapshot_protected'
    message = ('Snapshot %(snapshot)s is protected; unprotect it first '
               '(PATCH /v1/snapshots/%(snapshot)s {"snapshot": '
               '{"protected": false}}).')


class ServerRunning(Conflict):
    code = 'server_running'
    message = ('Server %(server)s is running; shut it off before reverting '
               'a disk to a snapshot.')


class InvalidState(Conflict):
    code = 'invalid_state'
    message = ('Snapshot %(snapshot)s is %(status)s; %(action)s is not '
               'possible.')


class CloneNotPossible(Conflict):
    code = 'clone_not_possible'
    message = 'The snapshot cannot be cloned: %(reason)s'


class IdempotencyKeyInUse(Conflict):
    code = 'idempotency_key_in_use'
    message = ('A request with Idempotency-Key %(key)s is still being '
               'processed; send it again once that one has been answered.')

    def __init__(self, message=None, retry_after=1, **kwargs):
        super().__init__(message, **kwargs)
        #: seconds, sent as the Retry-After header
        self.retry_after = int(retry_after)


class IdempotencyKeyReused(LivesnapException):
    status = 422
    code = 'idempotency_key_reused'
    message = ('Idempotency-Key %(key)s was used by a different request '
               '(%(first)s) %(seconds)d s ago; a repeat must be the same '
               'method, path and body. Use a new key for a new request.')
