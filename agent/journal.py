"""The agent's durable operation journal.

One small JSON file per operation in ``[agent] journal_dir``.  Before each
operation the agent writes what it is about to do; when it ends, the final
report.  Every write goes to a temporary file, is fsynced, renamed over the
old one and the directory fsynced, so a crash leaves either the old or the
new record, never a torn one.  A task re-sent with the same operation id is
answered from here instead of being done twice.
"""

import json
import os
import re
import threading
import time

_ID_RE = re.compile(r'^[A-Za-z0-9_.-]{1,64}$')


class Journal(object):

    def __init__(self, directory):
        self.directory = directory
        self._lock = threading.Lock()
        os.makedirs(directory, exist_ok=True)

    def _path(self, operation_id):
        if not isinstance(operation_id, str) or not _ID_RE.match(
                operation_id) or operation_id.startswith('.'):
            raise ValueError('invalid operation id %r' % (operation_id,))
        return os.path.join(self.directory, operation_id + '.json')

    def get(self, operation_id):
        """The operation's record, or None if this agent never saw it."""
        try:
            with open(self._path(operation_id)) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def record(self, operation_id, **fields):
        """Merge ``fields`` into the operation's record, durably."""
        path = self._path(operation_id)
        with self._lock:
            entry = self.get(operation_id) or {'operation_id': operation_id}
            entry.update(fields)
            entry['updated_at'] = time.time()
            tmp = path + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(entry, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return entry

    def unfinished(self):
        """Records of operations that started and never ended."""
        return [e for e in self.entries() if e.get('state') != 'done']

    def entries(self):
        """Every record, oldest first by operation id."""
        entries = []
        for name in sorted(os.listdir(self.directory)):
            if not name.endswith('.json'):
                continue
            try:
                with open(os.path.join(self.directory, name)) as f:
                    entry = json.load(f)
            except (OSError, ValueError):
                continue
            entries.append(entry)
        return sorted(entries, key=lambda e: e.get('updated_at', 0))
