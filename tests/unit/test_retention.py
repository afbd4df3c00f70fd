"""The retention rule (``conductor.retention``): Proxmox Backup Server's
prune, checked on examples and, with hypothesis, on its invariants."""

import datetime

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from conductor import retention

T0 = datetime.datetime(2026, 11, 25, 12, 0, 0)


def _item(id_, minutes_ago, protected=False):
    return retention.Item(id_, T0 - datetime.timedelta(minutes=minutes_ago),
                          protected)


def _kept(marks):
    return {k for k, v in marks.items() if v == retention.KEEP}


def test_keep_last():
    items = [_item('s%d' % i, i * 10) for i in range(5)]
    marks = retention.select(items, {'keep_last': 3})
    assert _kept(marks) == {'s0', 's1', 's2'}
    assert {k for k, v in marks.items() if v == retention.REMOVE} == {
        's3', 's4'}


def test_all_counts_zero_keeps_everything():
    items = [_item('s%d' % i, i * 10) for i in range(5)]
    marks = retention.select(items, {})
    assert set(marks.values()) == {retention.KEEP}


def test_hourly_keeps_the_newest_of_each_hour():
    # 11:50, 11:40 (hour 11), 10:50, 10:10 (hour 10), 09:30 (hour 9)
    items = [_item('a', 10), _item('b', 20), _item('c', 70),
             _item('d', 110), _item('e', 150)]
    marks = retention.select(items, {'keep_hourly': 2})
    assert _kept(marks) == {'a', 'c'}
    assert marks['b'] == marks['d'] == marks['e'] == retention.REMOVE


def test_periods_covered_by_an_earlier_option_do_not_count():
    """keep_last 1 keeps the newest (day 3); keep_daily 2 then keeps the
    newest of day 2 and of day 1, not a second one of day 3.
    """
    day = 24 * 60
    items = [_item('d3-late', 0), _item('d3-early', 60),
             _item('d2-late', day), _item('d2-early', day + 60),
             _item('d1', 2 * day), _item('d0', 3 * day)]
    marks = retention.select(items, {'keep_last': 1, 'keep_daily': 2})
    assert _kept(marks) == {'d3-late', 'd2-late', 'd1'}
    assert marks['d3-early'] == retention.REMOVE
    assert marks['d0'] == retention.REMOVE


def test_protected_are_never_removed_and_never_count():
    items = [_item('p', 0, protected=True), _item('a', 10), _item('b', 20),
             _item('q', 30, protected=True), _item('c', 40)]
    marks = retention.select(items, {'keep_last': 2})
    assert marks['p'] == marks['q'] == retention.PROTECTED
    assert _kept(marks) == {'a', 'b'}
    assert marks['c'] == retention.REMOVE


def test_periods_begin_in_the_policys_time_zone():
    # 23:30 and 00:30 UTC: two UTC days, one day in Tokyo (08:30, 09:30).
    items = [retention.Item('late', datetime.datetime(2026, 11, 26, 0, 30),
                            False),
             retention.Item('early', datetime.datetime(2026, 11, 25, 23, 30),
                            False)]
    assert _kept(retention.select(items, {'keep_daily': 2})) == {
        'late', 'early'}
    assert _kept(retention.select(items, {'keep_daily': 2},
                                  'Asia/Tokyo')) == {'late'}


def test_weekly_uses_iso_weeks():
    # Sunday 2026-11-22 and Monday 2026-11-23 are in two ISO weeks.
    items = [retention.Item('mon', datetime.datetime(2026, 11, 23, 9),
                            False),
             retention.Item('sun', datetime.datetime(2026, 11, 22, 9),
                            False),
             retention.Item('sat', datetime.datetime(2026, 11, 21, 9),
                            False)]
    assert _kept(retention.select(items, {'keep_weekly': 2})) == {
        'mon', 'sun'}


_RULES = st.fixed_dictionaries({
    name: st.integers(0, 4) for name, _ in retention.OPTIONS})
_ITEMS = st.lists(
    st.tuples(st.integers(0, 60 * 24 * 400), st.booleans()),
    max_size=40, unique_by=lambda x: x[0])


def _items(raw):
    return [retention.Item('s%d' % i, T0 - datetime.timedelta(minutes=m), p)
            for i, (m, p) in enumerate(raw)]


@settings(max_examples=300, deadline=None)
@given(raw=_ITEMS, rules=_RULES)
def test_invariants(raw, rules):
    items = _items(raw)
    marks = retention.select(items, rules, 'Europe/Paris')
    assert set(marks) == {x.id for x in items}
    for x in items:
        # Protected: never removed, never counted.
        assert (marks[x.id] == retention.PROTECTED) == x.protected
    kept = _kept(marks)
    if any(rules.values()):
        assert len(kept) <= sum(rules.values())
        unprotected = [x for x in items if not x.protected]
        if unprotected:
            newest = max(unprotected, key=lambda x: (x.created_at, x.id))
            assert newest.id in kept
    else:
        assert all(v != retention.REMOVE for v in marks.values())


@settings(max_examples=300, deadline=None)
@given(raw=_ITEMS, n=st.integers(0, 10))
def test_keep_last_alone_keeps_the_n_newest(raw, n):
    items = [x for x in _items(raw) if not x.protected]
    marks = retention.select(items, {'keep_last': n})
    newest = sorted(items, key=lambda x: x.created_at, reverse=True)[:n]
    if n:
        assert _kept(marks) == {x.id for x in newest}


@settings(max_examples=300, deadline=None)
@given(raw=_ITEMS, rules=_RULES)
def test_pruning_again_removes_nothing_more(raw, rules):
    """What a prune keeps, a second prune over it keeps too."""
    items = _items(raw)
    marks = retention.select(items, rules, 'UTC')
    left = [x for x in items if marks[x.id] != retention.REMOVE]
    again = retention.select(left, rules, 'UTC')
    assert retention.REMOVE not in again.values()
