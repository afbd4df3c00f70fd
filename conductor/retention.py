"""Which of a policy's snapshots to keep: the rule of Proxmox Backup
Server's prune (``keep-last``, ``keep-hourly``, ... ``keep-yearly``), which
cv4pve-autosnap and restic's ``forget --keep-*`` follow closely.

The snapshots are walked newest first, once per option, in this order:
``last``, ``hourly``, ``daily``, ``weekly``, ``monthly``, ``yearly``.  Each
option puts every snapshot in a *period*: ``last`` its own, ``hourly`` the
hour it was taken (in the policy's time zone), ``daily`` its day,
``weekly`` its ISO week, ``monthly`` its month, ``yearly`` its year.  For
option ``keep_X = N``:

* periods that already hold a snapshot kept by an earlier option are
  covered and do not count;
* walking newest first over the snapshots no option has decided yet, the
  first snapshot of each new period is kept, until N periods were kept;
  a later (older) snapshot of a period already kept by this option is
  removed;
* the walk stops at the first new period past the N-th; what is left stays
  undecided for the next option.

Snapshots still undecided after every option are removed.  Protected
snapshots are never removed and never count for any option.  If every
count is 0, nothing is removed (keep all).  Periods without a snapshot do
not count ("keep-daily 7" keeps the newest snapshot of each of the 7 most
recent days that have one).
"""

import collections
import datetime
import zoneinfo

KEEP = 'keep'
REMOVE = 'remove'
PROTECTED = 'protected'

#: The options in the order they are applied, with their period's format.
OPTIONS = (
    ('keep_last', None),
    ('keep_hourly', '%Y-%m-%d %H'),
    ('keep_daily', '%Y-%m-%d'),
    ('keep_weekly', '%G-W%V'),
    ('keep_monthly', '%Y-%m'),
    ('keep_yearly', '%Y'),
)

Item = collections.namedtuple('Item', 'id created_at protected')


def _local(created_at, tz):
    """A naive UTC time as an aware time in ``tz``."""
    return created_at.replace(tzinfo=datetime.timezone.utc).astimezone(tz)


def select(items, rules, timezone='UTC'):
    """Decide which snapshots the rules keep.

    :param items: objects with ``id``, ``created_at`` (naive UTC) and
        ``protected``.
    :param rules: ``{'keep_last': N, 'keep_hourly': N, ...}``; missing
        options count 0.
    :param timezone: an IANA zone name: where hours, days, weeks, months
        and years begin.
    :returns: ``{id: 'keep' | 'remove' | 'protected'}`` for every item.
    :raises: zoneinfo.ZoneInfoNotFoundError for an unknown zone.
    """
    tz = zoneinfo.ZoneInfo(timezone)
    ordered = sorted(items, key=lambda x: (x.created_at, x.id), reverse=True)
    marks = {}
    if not any(rules.get(name, 0) for name, _ in OPTIONS):
        return {x.id: PROTECTED if x.protected else KEEP for x in ordered}
    for name, fmt in OPTIONS:
        keep = rules.get(name, 0) or 0

        def period(item, fmt=fmt):
            if fmt is None:
                return item.id
            return _local(item.created_at, tz).strftime(fmt)

        covered = {period(x) for x in ordered if marks.get(x.id) == KEEP}
        kept = set()
        for item in ordered:
            if item.id in marks:
                continue
            if item.protected:
                marks[item.id] = PROTECTED
                continue
            key = period(item)
            if key in covered:
                continue
            if key in kept:
                marks[item.id] = REMOVE
                continue
            if len(kept) >= keep:
                break
            kept.add(key)
            marks[item.id] = KEEP
    for item in ordered:
        marks.setdefault(item.id, PROTECTED if item.protected else REMOVE)
    return marks
