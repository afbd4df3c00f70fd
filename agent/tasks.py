"""Running one task end to end: journal, driver, report.

The manager hands each task here.  The flow is the same for every action:
validate, look the operation up in the journal (a finished one is answered
from there), record that it started, let the driver do the patent's steps,
record the outcome, and cast the report to the conductor.
"""

import logging
import os

from agent import exception
from agent import images
from agent import steps as steps_mod
from agent import validation

LOG = logging.getLogger(__name__)


class TaskRunner(object):

    def __init__(self, driver, journal, conductor_api, host):
        self.driver = driver
        self.journal = journal
        self.conductor_api = conductor_api
        self.host = host
        self._handlers = {
            'create_snapshot': self._create_snapshot,
            'delete_snapshot': self._delete_snapshot,
            'revert_disk': self._revert_disk,
        }

    def run(self, ctxt, action, task):
        """Perform ``task`` once and report it; safe to call again."""
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

        entry = self.journal.get(operation_id)
        if entry and entry.get('state') == 'done':
            LOG.info('Operation %(op)s already done; re-sending its report',
                     {'op': operation_id})
            self._report(ctxt, operation_id, entry['report'])
            return

        self.journal.record(operation_id, action=action, task=task,
                            state='running', host=self.host)
        rec = steps_mod.StepRecorder()
        LOG.info('Starting %(action)s operation %(op)s',
                 {'action': action, 'op': operation_id})
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
        self.journal.record(operation_id, state='done', report=report)
        LOG.info('Operation %(op)s %(status)s (paused %(pause)s ms)',
                 {'op': operation_id, 'status': report['status'],
                  'pause': report.get('pause_ms')})
        self._report(ctxt, operation_id, report)

    def _report(self, ctxt, operation_id, report):
        try:
            self.conductor_api.report_operation(ctxt, operation_id, report)
        except Exception:
            # The journal keeps the report; the conductor asks for it again
            # through get_operation when the report does not arrive.
            LOG.exception('Could not send the report of %(op)s',
                          {'op': operation_id})

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
            progress=self._progress_cb(ctxt, task['operation_id']))
        result['child_size_bytes'] = images.actual_size(task['child_image'])
        return result

    def _revert_disk(self, ctxt, task, rec):
        result = self.driver.new_active_image(
            task['disk'], task['snapshot_image'], task['new_image'], rec)
        discard = task.get('discard_image')
        if discard and os.path.exists(discard):
            try:
                self.driver.delete_image(discard, rec)
            except Exception:
                # Leave the disk as it was: the old live image stays.
                images.remove(task['new_image'])
                raise
        return result
