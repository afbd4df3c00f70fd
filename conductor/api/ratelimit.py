"""Per-project rate limit of snapshot operations (create, delete, revert).

The count comes from the operations table, not from a conductor's memory,
so the limit holds however many conductors share the database.  It is a
sliding window of 60 seconds over the operations a project's tenants
started (``requested_by = tenant``; the conductor's own deferred deletions
and the runs of snapshot policies, ``requested_by = policy``, do not count:
a policy's schedule is its own limit).  Two requests racing on two
conductors may both pass at the edge of the window, so the limit can be
exceeded by at most the number of concurrent requests; it protects the
hosts, it is not billing.
"""

import datetime
import math

from oslo_config import cfg
import sqlalchemy as sa

from conductor.db import api as db
from conductor.db import models
from conductor import exception

CONF = cfg.CONF

WINDOW = 60.0


def check(project_id):
    """Refuse a new operation of ``project_id`` over the limit.

    :raises: exception.RateLimited, with ``retry_after`` the seconds until
        the oldest operation of the window leaves it.
    """
    limit = CONF.api.operations_per_minute
    if not limit:
        return
    now = models.utcnow()
    since = now - datetime.timedelta(seconds=WINDOW)
    with db.transaction() as s:
        count, oldest = s.execute(
            sa.select(sa.func.count(),
                      sa.func.min(models.Operation.created_at))
            .where(models.Operation.project_id == project_id)
            .where(models.Operation.requested_by == 'tenant')
            .where(models.Operation.created_at >= since)).one()
    if count < limit:
        return
    wait = WINDOW - (now - oldest).total_seconds() if oldest else WINDOW
    retry_after = max(1, int(math.ceil(wait)))
    raise exception.RateLimited(
        'Project %s started %d snapshot operations in the last minute and '
        'the limit is %d; try again in %d s.'
        % (project_id, count, limit, retry_after), retry_after=retry_after)
