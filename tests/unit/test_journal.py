"""The agent's journal: acknowledgement, pruning, abandonment, a full disk,
and a start-up that reads the live entries only."""

import errno
import json
import os
import time

import pytest

from agent import exception
from agent import journal as journal_mod
from agent import recovery
from agent import task_runner
from livesnap_tools import fixtures


@pytest.fixture
def journal(tmp_path):
    return journal_mod.Journal(str(tmp_path / 'j'))


def _done(journal, op_id, **fields):
    journal.record(op_id, action='create_snapshot', task={}, state='done',
                   report={'status': 'succeeded', 'op': op_id}, **fields)


def test_acknowledged_entry_leaves_the_live_journal(journal):
    _done(journal, 'a')
    _done(journal, 'b')
    journal.record('c', state='running')
    assert [e['operation_id'] for e in journal.unacknowledged()] == ['a', 'b']
    assert journal.acknowledge('a') is True
    assert [e['operation_id'] for e in journal.unacknowledged()] == ['b']
    assert sorted(e['operation_id'] for e in journal.entries()) == ['b', 'c']
    assert not os.path.exists(os.path.join(journal.directory, 'a.json'))
    # Still answers a late duplicate of its task from the archive.
    archived = journal.get('a')
    assert archived['report']['op'] == 'a' and archived['acked_at']
    # Acknowledging again is harmless; an unknown or running one is not
    # acknowledged.
    assert journal.acknowledge('a') is True
    assert journal.acknowledge('c') is False
    assert journal.acknowledge('never') is False
    assert journal.get('c')['state'] == 'running'


def test_entry_of_a_vm_left_paused_stays_live(journal):
    _done(journal, 'p', paused=True)
    assert journal.acknowledge('p') is True
    assert [e['operation_id'] for e in journal.entries()] == ['p']
    assert journal.unacknowledged() == []
    # Recovery clears the mark in place.
    journal.record('p', paused=False)
    assert journal.get('p')['paused'] is False


def test_record_updates_an_archived_entry_where_it_lives(journal):
    _done(journal, 'a')
    journal.acknowledge('a')
    journal.record('a', note='x')
    assert journal.entries() == []
    assert journal.get('a')['note'] == 'x'


def test_abandon_only_what_was_never_seen(journal):
    entry = journal.abandon('lost')
    assert entry['state'] == 'abandoned'
    assert journal.get('lost')['state'] == 'abandoned'
    assert journal.entries() == [] and journal.unfinished() == []
    # Abandoning again returns the same, and a seen operation is not
    # abandoned: its own record comes back.
    assert journal.abandon('lost')['state'] == 'abandoned'
    journal.record('busy', state='running')
    assert journal.abandon('busy')['state'] == 'running'
    _done(journal, 'over')
    assert journal.abandon('over')['state'] == 'done'
    with pytest.raises(ValueError):
        journal.abandon('../x')


def test_prune_removes_old_archived_entries_only(journal):
    for op_id in ('old1', 'old2', 'new'):
        _done(journal, op_id)
        journal.acknowledge(op_id)
    journal.abandon('old-abandoned')
    journal.record('live', state='running')
    past = time.time() - 3600
    for op_id in ('old1', 'old2', 'old-abandoned'):
        os.utime(os.path.join(journal.archive, op_id + '.json'),
                 (past, past))
    assert journal.prune(600) == 3
    assert journal.get('old1') is None and journal.get('old-abandoned') is None
    assert journal.get('new')['state'] == 'done'
    assert journal.get('live')['state'] == 'running'
    assert journal.prune(600) == 0


def test_prune_without_an_archive(journal):
    assert journal.prune(0) == 0


def test_a_full_disk_raises_journal_unavailable(journal, monkeypatch):
    journal.record('a', state='running')

    def enospc(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, 'fsync', enospc)
    with pytest.raises(exception.JournalUnavailable) as err:
        journal.record('a', state='done')
    assert err.value.code == 'journal_unavailable'
    assert 'No space left on device' in str(err.value)
    # The old record is intact and no temporary file is left.
    assert journal.get('a')['state'] == 'running'
    assert sorted(os.listdir(journal.directory)) == ['a.json']


def _fast_entries(directory, count, **fields):
    """Write ``count`` journal files the quick way (no fsync)."""
    os.makedirs(directory, exist_ok=True)
    for i in range(count):
        op_id = 'op-%06d' % i
        entry = dict({'operation_id': op_id, 'state': 'done',
                      'action': 'create_snapshot', 'task': {},
                      'report': {'status': 'succeeded'},
                      'updated_at': 1.0}, **fields)
        with open(os.path.join(directory, op_id + '.json'), 'w') as f:
            json.dump(entry, f)


def test_start_up_reads_only_the_live_entries(tmp_path, monkeypatch):
    """Many acknowledged operations (10,000 here, LIVESNAP_JOURNAL_ENTRIES
    to change it): the start-up replay opens the few live entries and
    never lists the archive.  No timing is asserted; tools/bench-journal
    times a start-up after 100,000 operations.
    """
    j = journal_mod.Journal(str(tmp_path / 'j'))
    count = int(os.environ.get('LIVESNAP_JOURNAL_ENTRIES', '10000'))
    _fast_entries(j.archive, count, acked=True, acked_at=2.0)
    _done(j, 'unacked')
    conductor = fixtures.FakeConductor()
    runner = task_runner.TaskRunner(driver=None, journal=j,
                                    conductor_api=conductor, host='hv1')

    opened, listed = [], []
    real_open, real_listdir, real_scandir = open, os.listdir, os.scandir

    def counting_open(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    def counting_listdir(path='.'):
        listed.append(str(path))
        return real_listdir(path)

    def counting_scandir(path='.'):
        listed.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(journal_mod, 'open', counting_open, raising=False)
    monkeypatch.setattr(os, 'listdir', counting_listdir)
    monkeypatch.setattr(os, 'scandir', counting_scandir)
    recovery.recover(runner)
    monkeypatch.undo()

    assert j.archive not in listed
    assert set(opened) == {os.path.join(j.directory, 'unacked.json')}
    # ... and the unacknowledged report was sent again at start.
    assert conductor.reports == [('unacked', {'status': 'succeeded',
                                              'op': 'unacked'})]
    assert conductor.hosts == ['hv1']
    assert runner.recovered.is_set()


def test_entries_from_before_acknowledgements_are_archived_not_resent(
        tmp_path):
    """An upgraded agent does not flood the conductors with every report
    of its history; the prune thread archives those entries.
    """
    j = journal_mod.Journal(str(tmp_path / 'j'))
    _fast_entries(j.directory, 3)               # the old format: no 'acked'
    _fast_entries(j.directory, 1, paused=True)  # ...one left a VM paused
    _done(j, 'new')
    assert [e['operation_id'] for e in j.unacknowledged()] == ['new']
    assert j.archive_legacy() == 2
    assert sorted(e['operation_id'] for e in j.entries()) == [
        'new', 'op-000000']
    assert j.get('op-000001')['acked'] is True
    assert j.archive_legacy() == 0
