"""When a snapshot policy runs: its slots.

A policy has either an ``interval`` in seconds or a five-field ``cron``
expression read in its ``timezone`` (an IANA name, e.g.
``Europe/Paris``).

* Interval slots are ``anchor + k * interval``, the anchor being the
  policy's creation, to the second.  Time
  zones do not matter to them.
* Cron slots are the times the expression matches on the wall clock of the
  zone (``croniter``).  Across a daylight-saving change a wall-clock time
  that does not exist is not matched and one that exists twice is matched
  once.

Every time here is naive UTC (the database's), whole seconds.
"""

import datetime
import zoneinfo

import croniter

from conductor import exception

UTC = datetime.timezone.utc


def _second(dt):
    return dt.replace(microsecond=0)


def check_timezone(name):
    """:raises: BadRequest if ``name`` is not an IANA time zone."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise exception.BadRequest('Unknown time zone %r; use an IANA name '
                                   'such as UTC or Europe/Paris.' % name)


def check_cron(expression):
    """:raises: BadRequest unless ``expression`` is a valid five-field cron
    expression (minute hour day-of-month month day-of-week).
    """
    if len(expression.split()) != 5 or not croniter.croniter.is_valid(
            expression):
        raise exception.BadRequest(
            'Invalid cron expression %r: five fields are expected '
            '(minute hour day-of-month month day-of-week).' % expression)
    try:
        croniter.croniter(expression, datetime.datetime(
            2000, 1, 1, tzinfo=UTC)).get_next(datetime.datetime)
    except (croniter.CroniterError, ValueError, OverflowError):
        raise exception.BadRequest('Cron expression %r never matches.'
                                   % expression)


def next_after(after, interval=None, cron=None, timezone='UTC', anchor=None):
    """The first slot strictly after ``after``.

    :param after: naive UTC.
    :param interval: seconds between slots (with ``anchor``), or None.
    :param cron: a cron expression read in ``timezone``, or None.
    :param anchor: naive UTC; the interval's slots are ``anchor + k *
        interval`` (``after`` when None).
    :returns: naive UTC, whole seconds.
    """
    after = _second(after)
    if interval:
        anchor = _second(anchor or after)
        if after < anchor:
            return anchor
        steps = int((after - anchor).total_seconds()) // interval + 1
        return anchor + datetime.timedelta(seconds=steps * interval)
    tz = zoneinfo.ZoneInfo(timezone)
    start = after.replace(tzinfo=UTC).astimezone(tz)
    nxt = croniter.croniter(cron, start).get_next(datetime.datetime)
    return nxt.astimezone(UTC).replace(tzinfo=None)


def next_for(policy, after):
    """The policy's first slot strictly after ``after``."""
    return next_after(after, interval=policy.interval, cron=policy.cron,
                      timezone=policy.timezone or 'UTC',
                      anchor=policy.created_at)
