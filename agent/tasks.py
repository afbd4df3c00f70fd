"""Running one task end to end: journal, driver, report.

The manager hands each task here.  The flow is the same for every action:
validate, look the operation up in the journal (a finished one is answered
from there), record that it started, let the driver do the patent's steps,
record the outcome, and cast the report to the conductor.
"""

import logging
import os
import threading
import time

from agent import exception
from agent import faults
from agent import images
from agent import paths
from agent import steps as steps_mod
from agent import validation

LOG = logging.getLogger(__name__)


class TaskRunner(object):

    def __init__(self, driver, journal, conductor_api, host):
        self.driver = driver
        self.journal = journal
        self.conductor_api = conductor_api
        self.host = host
        self._running = set()
        self._running_lock = threading.Lock()
        self._handlers = {
            'create_snapshot': self._create_snapshot,
            'delete_snapshot': self._delete_snapshot,
            'revert_disk': self._revert_disk,
        }

    def run(self, ctxt, action, task, expires_at=None, recovering=False):
        """Perform ``task`` once and report it; safe to call again.

        :param expires_at: UNIX time after which a task this agent has never
            started is refused: the conductor may already have given up on
            it, so a late delivery must not act.
        :param recovering: the journal replay after a restart; the task is
            finished whatever its age.
        """
        operation_id = task.get('operation_id') if isinstance(
            task, dict) else None
        try:
            validation.validate(action, task)
        except exception.InvalidRequest as exc:
            LOG.warning('Refused %(action)s task: %(error)s',
                        {'action': action, 'error': exc})
            if isinstance(operation_id, str) and operation_id:
                self._report(ctxt, operation_id, {
                    'status': 'failed', 'error': str(exc),
                    'error_code': exc.code, 'steps': [], 'pause_ms': None})
            return

        with self._running_lock:
            if operation_id in self._running:
                LOG.info('Operation %(op)s is already running here; '
                         'duplicate task ignored', {'op': operation_id})
                return
            self._running.add(operation_id)
        try:
            self._run(ctxt, action, task, operation_id, expires_at,
                      recovering)
        finally:
            with self._running_lock:
                self._running.discard(operation_id)

    def _run(self, ctxt, action, task, operation_id, expires_at, recovering):
        entry = self.journal.get(operation_id)
        if entry and entry.get('state') == 'done':
            LOG.info('Operation %(op)s already done; re-sending its report',
                     {'op': operation_id})
            self._report(ctxt, operation_id, entry['report'])
            return
        if entry is None and expires_at is not None and not recovering \
                and time.time() > expires_at:
            LOG.warning('Operation %(op)s arrived after it expired; refused',
                        {'op': operation_id})
            report = {'status': 'failed', 'error_code': 'expired',
                      'error': 'The task reached the agent after its '
                               'deadline and was not started.',
                      'steps': [], 'pause_ms': None}
            self.journal.record(operation_id, action=action, task=task,
                                state='done', report=report)
            self._report(ctxt, operation_id, report)
            return

        self.journal.record(operation_id, action=action, task=task,
                            state='running', host=self.host,
                            paused=False)
        rec = steps_mod.StepRecorder(
            listener=self._journal_listener(action, operation_id))
        LOG.info('%(what)s %(action)s operation %(op)s',
                 {'what': 'Resuming' if entry else 'Starting',
                  'action': action, 'op': operation_id})
        if recovering and entry is not None:
            with rec.step('recover', interrupted_at=entry.get('step'),
                          completed=entry.get('step_done')):
                pass
        try:
            result = self._handlers[action](ctxt, task, rec)
            report = {'status': 'succeeded', 'result': result}
        except exception.AgentError as exc:
            LOG.warning('Operation %(op)s failed: %(error)s',
                        {'op': operation_id, 'error': exc})
            report = {'status': 'failed', 'error': str(exc),
                      'error_code': exc.code}
        except Exception as exc:  # report, never leave the conductor waiting
            LOG.exception('Operation %(op)s failed unexpectedly',
                          {'op': operation_id})
            report = {'status': 'failed', 'error_code': 'agent_error',
                      'error': 'Unexpected agent error: %s'
                               % (exc.__class__.__name__,)}
        report.update(rec.as_dict())
        if rec.paused:
            # Resume failed after every retry: the journal keeps the VM
            # marked paused so the next start of the agent retries.
            report['vm_left_paused'] = True
        self.journal.record(operation_id, state='done', report=report,
                            paused=rec.paused)
        faults.point(action, 'report', 'before')
        LOG.info('Operation %(op)s %(status)s (paused %(pause)s ms)',
                 {'op': operation_id, 'status': report['status'],
                  'pause': report.get('pause_ms')})
        self._report(ctxt, operation_id, report)

    def _journal_listener(self, action, operation_id):
        """Write ahead: the journal knows each step before it is taken.

        While the VM is paused nothing is written: an fsync there would
        lengthen the pause, and recovery needs only to know that the VM
        was paused (written before ``stop``), since every step is
        idempotent and the operation is run again whole.
        """
        state = {'paused': False}

        def listener(event, name, detail):
            if event == 'paused':
                state['paused'] = True
            elif event == 'resumed':
                state['paused'] = False
                self.journal.record(operation_id, paused=False,
                                    step_done=name)
            elif event == 'start':
                if not state['paused']:
                    fields = {'step': name}
                    if name == 'pause':
                        fields['paused'] = bool(
                            detail.get('was_running', True))
                    self.journal.record(operation_id, **fields)
                faults.point(action, name, 'before')
            elif event == 'end':
                if not state['paused']:
                    self.journal.record(operation_id, step_done=name)
                faults.point(action, name, 'after')
        return listener

    def _report(self, ctxt, operation_id, report):
        try:
            self.conductor_api.report_operation(ctxt, operation_id, report)
        except Exception:
            # The journal keeps the report; the conductor asks for it again
            # through get_operation when the report does not arrive.
            LOG.exception('Could not send the report of %(op)s',
                          {'op': operation_id})

    def inspect_images(self, image_paths):
        """What the audit needs: for each path, whether it exists, its
        backing file and whether ``qemu-img check`` passes; and every
        qcow2 file in the image directories.  Paths outside them are
        reported as refused, never opened."""
        result = {'images': {}, 'files': []}
        if not isinstance(image_paths, list):
            image_paths = []
        for path in image_paths[:10000]:
            info = {'exists': False}
            try:
                real = paths.confine(path, self.driver.image_dirs)
                info['exists'] = os.path.exists(real)
                if info['exists']:
                    info['backing'] = images.backing_file(real)
                    info['check'] = self._check(real)
            except exception.AgentError as exc:
                info['error'] = str(exc)
            result['images'][path] = info
        for directory in self.driver.image_dirs:
            for root, dirs, files in os.walk(directory):
                result['files'].extend(os.path.join(root, f) for f in files
                                       if f.endswith('.qcow2'))
        return result

    @staticmethod
    def _check(path):
        """``qemu-img check``, unless a process may be writing the image:
        its metadata on disk is stale until QEMU flushes."""
        if images.is_locked(path):
            return 'ok'  # in use for writing: QEMU checks it when opening
        try:
            images.check(path, force_share=True)
            return 'ok'
        except exception.ImageError as exc:
            return str(exc)

    def remove_image(self, path):
        """Remove an orphaned image (audit repair); refuses open ones."""
        rec = steps_mod.StepRecorder()
        try:
            self.driver.delete_image(path, rec)
        except exception.AgentError as exc:
            return {'removed': False, 'error': str(exc)}
        return {'removed': True}

    def server_running(self, qmp_socket):
        if not isinstance(qmp_socket, str) or not qmp_socket:
            return False
        return self.driver.is_online({'qmp_socket': qmp_socket,
                                      'active_image': ''})

    def _progress_cb(self, ctxt, operation_id):
        def progress(percent):
            try:
                self.conductor_api.report_progress(ctxt, operation_id,
                                                   percent)
            except Exception:
                LOG.debug('Progress of %(op)s not sent', {'op': operation_id})
        return progress

    def _create_snapshot(self, ctxt, task, rec):
        return self.driver.create_snapshot(task['disk'], task['new_image'],
                                           rec)

    def _delete_snapshot(self, ctxt, task, rec):
        if task['mode'] == 'physical':
            self.driver.delete_image(task['snapshot_image'], rec)
            return {}
        result = self.driver.merge(
            task['disk'], task['snapshot_image'], task.get('parent_image'),
            task['child_image'], rec,
            progress=self._progress_cb(ctxt, task['operation_id']),
            child_is_leaf=task.get('child_is_leaf', False))
        # the file that now holds the child (the snapshot's, if committed)
        result['child_size_bytes'] = images.actual_size(result['child_image'])
        return result

    def _revert_disk(self, ctxt, task, rec):
        discard = task.get('discard_image')
        if discard:
            # Refuse a bad path before any I/O, not after the new image.
            paths.confine(discard, self.driver.image_dirs)
        result = self.driver.new_active_image(
            task['disk'], task['snapshot_image'], task['new_image'], rec)
        if discard and os.path.exists(discard):
            try:
                self.driver.delete_image(discard, rec)
            except Exception:
                # Leave the disk as it was: the old live image stays.
                images.remove(task['new_image'])
                raise
        return result
