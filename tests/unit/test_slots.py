"""When a snapshot policy runs (``conductor.slots``): interval slots from
the policy's anchor, cron slots on the wall clock of its time zone."""

import datetime

from hypothesis import given
from hypothesis import strategies as st
import pytest

from conductor import exception
from conductor import slots

D = datetime.datetime


def test_interval_slots_are_anchored():
    anchor = D(2026, 1, 1, 0, 0, 0)
    assert slots.next_after(D(2026, 1, 1, 0, 0, 5), interval=60,
                            anchor=anchor) == D(2026, 1, 1, 0, 1)
    # Strictly after: a slot time itself yields the following one.
    assert slots.next_after(D(2026, 1, 1, 0, 1), interval=60,
                            anchor=anchor) == D(2026, 1, 1, 0, 2)
    # Before the anchor: the anchor.
    assert slots.next_after(D(2025, 12, 31), interval=60,
                            anchor=anchor) == anchor
    # Microseconds do not matter.
    assert slots.next_after(D(2026, 1, 1, 0, 0, 59, 999999), interval=60,
                            anchor=anchor) == D(2026, 1, 1, 0, 1)


@given(offset=st.integers(0, 10 ** 8), interval=st.integers(1, 10 ** 6))
def test_interval_next_is_the_first_slot_after(offset, interval):
    anchor = D(2026, 1, 1)
    after = anchor + datetime.timedelta(seconds=offset)
    nxt = slots.next_after(after, interval=interval, anchor=anchor)
    assert after < nxt <= after + datetime.timedelta(seconds=interval)
    assert (nxt - anchor).total_seconds() % interval == 0


def test_cron_in_utc():
    assert slots.next_after(D(2026, 1, 1, 1, 59), cron='0 2 * * *') == D(
        2026, 1, 1, 2, 0)
    assert slots.next_after(D(2026, 1, 1, 2, 0), cron='0 2 * * *') == D(
        2026, 1, 2, 2, 0)
    assert slots.next_after(D(2026, 1, 1, 2, 0),
                            cron='*/15 * * * *') == D(2026, 1, 1, 2, 15)
    # Mondays (2026-01-05 is a Monday).
    assert slots.next_after(D(2026, 1, 1), cron='0 3 * * 1') == D(
        2026, 1, 5, 3, 0)


def test_cron_in_a_time_zone():
    # 02:00 in Paris is 01:00 UTC in winter and 00:00 UTC in summer.
    assert slots.next_after(D(2026, 1, 10), cron='0 2 * * *',
                            timezone='Europe/Paris') == D(2026, 1, 10, 1, 0)
    assert slots.next_after(D(2026, 7, 9, 23), cron='0 2 * * *',
                            timezone='Europe/Paris') == D(2026, 7, 10, 0, 0)
    assert slots.next_after(D(2026, 1, 10), cron='0 9 * * *',
                            timezone='Asia/Tokyo') == D(2026, 1, 11, 0, 0)


def test_cron_across_daylight_saving_changes():
    """As croniter does it (docs/schedules.md): a wall-clock time the
    spring change skips runs at the first time after it (03:00); one the
    autumn change repeats runs twice.
    """
    paris = 'Europe/Paris'
    # 2026-03-29 02:30 does not exist in Paris.
    assert slots.next_after(D(2026, 3, 28, 23, 0), cron='30 2 * * *',
                            timezone=paris) == D(2026, 3, 29, 1, 0)
    # 2026-10-25 02:30 exists twice: 00:30 and 01:30 UTC.
    first = slots.next_after(D(2026, 10, 24, 23, 0), cron='30 2 * * *',
                             timezone=paris)
    assert first == D(2026, 10, 25, 0, 30)
    assert slots.next_after(first, cron='30 2 * * *',
                            timezone=paris) == D(2026, 10, 25, 1, 30)


@pytest.mark.parametrize('expression', [
    '* * * *', '* * * * * *', '61 * * * *', 'nonsense x y z w', '0 25 * * *',
    '0 0 31 2 *'])
def test_invalid_cron(expression):
    with pytest.raises(exception.BadRequest):
        slots.check_cron(expression)


def test_valid_cron():
    for expression in ('0 2 * * *', '*/5 * * * *', '0 0 1 * *',
                       '0 3 * * mon-fri'):
        slots.check_cron(expression)


def test_time_zones():
    slots.check_timezone('UTC')
    slots.check_timezone('America/New_York')
    for bad in ('Mars/Olympus', 'Europe/../../etc/passwd', ''):
        with pytest.raises(exception.BadRequest):
            slots.check_timezone(bad)
