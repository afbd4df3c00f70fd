"""The agent's durable operation journal.

One small JSON file per operation in ``[agent] journal_dir``.  Before each
operation the agent writes what it is about to do; when it ends, the final
report.  Every write goes to a temporary file, is fsynced, renamed over the
old one and the directory fsynced, so a crash leaves either the old or the
new record, never a torn one.  A task re-sent with the same operation id is
answered from here instead of being done twice.

The journal directory holds only the live entries: operations that run,
and ended ones whose report the conductor has not yet acknowledged (the
agent re-sends those until it has).  Once the conductor acknowledges a
report, its entry moves to the ``acked/`` archive beneath it, where it
still answers a late duplicate of the task, and is removed after
``[agent] journal_retention``.  Operations the conductor gave up on are
written straight to the archive as ``abandoned``, so a late copy of their
task is refused.  Start-up reads the live entries only: it stays fast
however many operations the host has done.

An entry's ``state`` is ``running``, ``done`` (with its ``report``) or
``abandoned``.  A failed write raises ``JournalUnavailable`` (a full disk,
say): the agent then refuses new work rather than do it unrecorded.
"""

import json
import os
import re
import threading
import time

from agent import exception

_ID_RE = re.compile(r'^[A-Za-z0-9_.-]{1,64}$')

#: Sub-directory of the acknowledged and abandoned entries.
ARCHIVE = 'acked'


class Journal(object):

    def __init__(self, directory):
        self.directory = directory
        self.archive = os.path.join(directory, ARCHIVE)
        self._lock = threading.RLock()
        os.makedirs(directory, exist_ok=True)

    @staticmethod
    def valid_id(operation_id):
        """Whether ``operation_id`` may name a journal entry."""
        return isinstance(operation_id, str) and bool(
            _ID_RE.match(operation_id)) and not operation_id.startswith('.')

    @classmethod
    def _name(cls, operation_id):
        if not cls.valid_id(operation_id):
            raise ValueError('invalid operation id %r' % (operation_id,))
        return operation_id + '.json'

    def _path(self, operation_id):
        return os.path.join(self.directory, self._name(operation_id))

    def _archived_path(self, operation_id):
        return os.path.join(self.archive, self._name(operation_id))

    @staticmethod
    def _load(path):
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def get(self, operation_id):
        """The operation's record, live or archived, or None if this agent
        never saw it (or forgot it after ``journal_retention``).
        """
        entry = self._load(self._path(operation_id))
        if entry is None:
            entry = self._load(self._archived_path(operation_id))
        return entry

    def _write(self, path, entry, durable=True):
        """Write ``entry`` at ``path`` atomically, and durably unless
        ``durable`` is false: the rename alone survives a crash of the
        agent's process (the page cache outlives it), the fsyncs make it
        survive a crash of the host too.

        :raises: JournalUnavailable if the disk refuses (ENOSPC, EIO...).
        """
        tmp = path + '.tmp'
        try:
            if os.path.dirname(path) == self.archive:
                os.makedirs(self.archive, exist_ok=True)
            with open(tmp, 'w') as f:
                json.dump(entry, f, sort_keys=True)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
            if durable:
                self._fsync_dir(os.path.dirname(path))
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise exception.JournalUnavailable(
                'The agent cannot write its journal in %s: %s'
                % (self.directory, exc.strerror or exc))

    @staticmethod
    def _fsync_dir(directory):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def record(self, operation_id, durable=True, **fields):
        """Merge ``fields`` into the operation's record, where the record
        lives (live, or archived once acknowledged).  A record that
        becomes ``done`` awaits the conductor's acknowledgement
        (``acked: false``) unless it already has it.

        :param durable: fsync it (survives a crash of the host); without,
            it survives a crash of the agent only.  Recovery needs durably
            only that an operation started (its task), that a VM is about
            to be paused, and the report; step boundaries are for the
            record and cost a latency-bound fsync pair each.
        :raises: ValueError for a malformed id; JournalUnavailable.
        """
        with self._lock:
            path = self._path(operation_id)
            entry = self._load(path)
            if entry is None:
                archived = self._archived_path(operation_id)
                entry = self._load(archived)
                if entry is not None:
                    path = archived
            entry = entry or {'operation_id': operation_id}
            entry.update(fields)
            if fields.get('state') == 'done' and not entry.get('acked'):
                entry['acked'] = False
            entry['updated_at'] = time.time()
            self._write(path, entry, durable)
            return entry

    def acknowledge(self, operation_id):
        """The conductor has applied the operation's report: archive it.

        An entry that still marks a VM paused (its resume failed) or a
        guest frozen (its thaw failed) stays live, so the next start of
        the agent resumes that VM or thaws that guest.
        :returns: True if the entry is (now) acknowledged, False if it is
            unknown or not done.
        :raises: ValueError, JournalUnavailable
        """
        with self._lock:
            path = self._path(operation_id)
            entry = self._load(path)
            if entry is None:
                archived = self._load(self._archived_path(operation_id))
                return bool(archived and archived.get('acked'))
            if entry.get('state') != 'done':
                return False
            entry['acked'] = True
            entry['acked_at'] = time.time()
            if entry.get('paused') or entry.get('frozen'):
                self._write(path, entry)
                return True
            self._archive(path, entry)
            return True

    def _archive(self, path, entry):
        self._write(self._archived_path(entry['operation_id']), entry)
        # A crash here leaves both copies; the live one wins, is sent
        # again and acknowledged again: harmless.
        try:
            os.unlink(path)
            self._fsync_dir(self.directory)
        except OSError as exc:
            raise exception.JournalUnavailable(
                'The agent cannot prune its journal in %s: %s'
                % (self.directory, exc.strerror or exc))

    def archive_legacy(self):
        """Archive the ended entries written before acknowledgements
        existed (no ``acked`` field): their reports were sent once, the
        conductor's deadlines took care of lost ones, and they would
        otherwise be read at every start.  :returns: the number moved.
        """
        moved = 0
        for entry in self.entries():
            if entry.get('state') != 'done' or 'acked' in entry or \
                    entry.get('paused') or not self.valid_id(
                        entry.get('operation_id')):
                continue
            with self._lock:
                path = self._path(entry['operation_id'])
                current = self._load(path)
                if current is None or 'acked' in current:
                    continue
                current['acked'] = True
                current['acked_at'] = time.time()
                self._archive(path, current)
                moved += 1
        return moved

    def abandon(self, operation_id):
        """Record that the conductor gave up on an operation this agent
        never started, so a late copy of its task is refused.

        :returns: the operation's record: the new ``abandoned`` one, or the
            existing one if the agent had already seen the operation (then
            nothing is written and the caller learns how it stands).
        :raises: ValueError, JournalUnavailable
        """
        with self._lock:
            entry = self.get(operation_id)
            if entry is not None:
                return entry
            entry = {'operation_id': operation_id, 'state': 'abandoned',
                     'abandoned_at': time.time(),
                     'updated_at': time.time()}
            self._write(self._archived_path(operation_id), entry)
            return entry

    def entries(self):
        """Every live record (not the archive), oldest first."""
        entries = []
        for name in os.listdir(self.directory):
            if not name.endswith('.json'):
                continue
            entry = self._load_quietly(os.path.join(self.directory, name))
            if entry is not None:
                entries.append(entry)
        return sorted(entries, key=lambda e: e.get('updated_at', 0))

    @staticmethod
    def _load_quietly(path):
        try:
            with open(path) as f:
                entry = json.load(f)
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) else None

    def unfinished(self):
        """Records of operations that started and never ended."""
        return [e for e in self.entries()
                if e.get('state') not in ('done', 'abandoned')]

    def unacknowledged(self):
        """Ended operations whose report the conductor has not confirmed."""
        return [e for e in self.entries()
                if e.get('state') == 'done' and e.get('acked') is False]

    def prune(self, older_than):
        """Remove archived entries last written more than ``older_than``
        seconds ago.  :returns: the number removed.
        """
        cutoff = time.time() - older_than
        removed = 0
        try:
            it = os.scandir(self.archive)
        except FileNotFoundError:
            return 0
        with it:
            for item in it:
                if not item.name.endswith('.json'):
                    continue
                try:
                    if item.stat().st_mtime < cutoff:
                        os.unlink(item.path)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed
