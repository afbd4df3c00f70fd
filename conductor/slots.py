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


def _minutes(expression):
    """The minutes of the day (0..1439) the expression's minute and hour
    fields match, sorted.
    """
    fields = croniter.croniter.expand(expression)[0]
    minutes = range(60) if fields[0] == ['*'] else fields[0]
    hours = range(24) if fields[1] == ['*'] else fields[1]
    return sorted(h * 60 + m for h in hours for m in minutes)


def _days_apart(expression):
    """The fewest days between two days the expression's day fields
    (day of month, month, day of week) match, over eight years from a
    leap year's start (so 29 February is seen twice).
    """
    day_fields = ' '.join(['0', '0'] + expression.split()[2:])
    it = croniter.croniter(day_fields, datetime.datetime(2000, 1, 1))
    previous, fewest = None, None
    for _ in range(3000):
        day = it.get_next(datetime.datetime)
        if day.year >= 2008:
            break
        if previous is not None:
            gap = (day - previous).days
            fewest = gap if fewest is None else min(fewest, gap)
            if fewest == 1:
                break
        previous = day
    return fewest


def shortest_gap(expression):
    """The fewest seconds between two slots of a (valid) cron expression
    on the wall clock (a daylight-saving change can bring two slots an
    hour closer, once).
    """
    times = _minutes(expression)
    gaps = [b - a for a, b in zip(times, times[1:])]
    days = _days_apart(expression)
    if days is not None:
        gaps.append(days * 1440 - times[-1] + times[0])
    return 60 * min(gaps) if gaps else None


def check_cron_interval(expression, minimum):
    """:raises: BadRequest if two slots of ``expression`` can be closer
    than ``minimum`` seconds.
    """
    gap = shortest_gap(expression)
    if gap is not None and gap < minimum:
        raise exception.BadRequest(
            'Cron expression %r runs %d seconds apart at its closest; '
            'runs must be at least %d seconds apart.'
            % (expression, gap, minimum))


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
