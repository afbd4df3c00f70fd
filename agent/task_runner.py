"""Running one task end to end: journal, driver, report.

The manager hands each task here.  The flow is the same for every action:
validate, look the operation up in the journal (a finished one is answered
from there, an abandoned one refused), record that it started, let the
driver do the patent's steps, record the outcome, and cast the report to
the conductor.  The report is cast again, less and less often, until the
conductor acknowledges it (``acknowledge``), so a report lost with a
conductor that died applying it is applied by another one within seconds.
A guest an operation left frozen (its thaw failed) is thawed again in the
background, with backoff, until it is thawed or the retry deadline passes
(``retry_thaw``).
"""

import contextlib
import logging
import os
import threading
import time

from agent import exception
from agent import metrics
from agent import recovery
from agent import steps as steps_mod
from agent import validation
from livesnap import context
from livesnap import faults

LOG = logging.getLogger(__name__)


class TaskRunner(object):

    def __init__(self, driver, journal, conductor_api, host,
                 resend_interval=5.0, resend_max_interval=60.0,
                 progress_interval=1.0, thaw_retry_interval=1.0,
                 thaw_retry_timeout=300.0):
        """:param resend_interval: seconds a report waits for the
            conductor's acknowledgement before it is sent again; each
            further re-send waits twice as long, up to
            ``resend_max_interval``.
        :param progress_interval: seconds between two progress messages
            of one copy (see ``_progress_cb``).
        :param thaw_retry_interval: seconds before the first retry of a
            failed thaw; each further one waits twice as long.
        :param thaw_retry_timeout: seconds a failed thaw is retried for
            (see ``retry_thaw``).
        """
        self.driver = driver
        self.journal = journal
        self.conductor_api = conductor_api
        self.host = host
        self.resend_interval = resend_interval
        self.progress_interval = progress_interval
        self.resend_max_interval = max(resend_max_interval, resend_interval)
        self.thaw_retry_interval = thaw_retry_interval
        self.thaw_retry_timeout = thaw_retry_timeout
        # operation ids whose guest a thread is thawing
        self._thawing = set()
        # guest (``_guest_of``) -> Lock held from a freeze to its thaw,
        # and by a thaw retry from its check to its thaw
        self._guest_locks = {}
        self._running = set()
        self._running_lock = threading.Lock()
        # operation id -> Event set when an administrator cancels it
        self._cancel = {}
        # Reports the journal could not store (a full disk): kept here,
        # sent and re-sent like the others, journaled once it can be.
        self._outcomes = {}
        # operation id -> (monotonic time of the next re-send, its delay)
        self._schedule = {}
        self._reports_lock = threading.Lock()
        self._rerunning = set()
        #: Set once the start-up replay of the journal has finished.
        self.recovered = threading.Event()
        self._handlers = {
            'create_snapshot': self._create_snapshot,
            'create_snapshots': self._create_snapshots,
            'delete_snapshot': self._delete_snapshot,
            'revert_disk': self._revert_disk,
            'clone_snapshot': self._clone_snapshot,
        }

    def run(self, ctxt, action, task, expires_at=None, recovering=False):
        """Perform ``task`` once and report it; safe to call again.

        :param expires_at: UNIX time after which a task this agent has never
            started is refused: the conductor may already have given up on
            it, so a late delivery must not act.  (The conductor also
            records each abandonment here, see ``abandon``; this is the
            second guard.)
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
        except exception.JournalUnavailable as exc:
            # Nothing was started: refuse clearly rather than work
            # without a journal that could recover the work.
            LOG.error('Operation %(op)s refused: %(error)s',
                      {'op': operation_id, 'error': exc})
            self._keep_outcome(ctxt, operation_id, {
                'status': 'failed', 'error_code': exc.code,
                'error': '%s. The agent does no work it cannot journal; '
                         'nothing was done in this attempt.' % (exc,),
                'steps': [], 'pause_ms': None})
        finally:
            with self._running_lock:
                self._running.discard(operation_id)

    def _run(self, ctxt, action, task, operation_id, expires_at, recovering):
        with self._reports_lock:
            outcome = self._outcomes.get(operation_id)
        if outcome is not None:
            LOG.info('Operation %(op)s already ended; re-sending its report',
                     {'op': operation_id})
            self._report(ctxt, operation_id, outcome['report'])
            return
        entry = self.journal.get(operation_id)
        if entry and entry.get('state') == 'done':
            LOG.info('Operation %(op)s already done; re-sending its report',
                     {'op': operation_id})
            self._report(ctxt, operation_id, entry['report'])
            return
        if entry and entry.get('state') == 'abandoned':
            # The conductor failed the operation and released the disk:
            # starting it now would act behind the conductor's back.
            LOG.warning('Operation %(op)s was abandoned by the conductor; '
                        'its late task is refused', {'op': operation_id})
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
            # The journal keeps the task as received; the driver gets a
            # checked copy.
            work = validation.validate(action, task)
            validation.check_locators(self.driver, work)
            result = self._handlers[action](ctxt, work, rec)
            if isinstance(result, dict) and rec.taken_at is not None:
                result['taken_at'] = rec.taken_at  # a snapshot's moment
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
        try:
            entry = self.journal.record(operation_id, state='done',
                                        report=report, paused=rec.paused)
        except exception.JournalUnavailable as exc:
            # The work is done and its outcome known: report it all the
            # same, from memory, rather than leave the conductor asking.
            LOG.error('Operation %(op)s %(status)s but its outcome could '
                      'not be journaled: %(error)s',
                      {'op': operation_id, 'status': report['status'],
                       'error': exc})
            self._keep_outcome(ctxt, operation_id, report)
            return
        if entry.get('frozen'):
            # The thaw failed (the listener clears ``frozen`` only when a
            # thaw step ends well): try again while this agent lives.
            self.retry_thaw(entry)
        faults.point(action, 'report', 'before')
        if report.get('pause_ms') is None:
            LOG.info('Operation %(op)s %(status)s',
                     {'op': operation_id, 'status': report['status']})
        else:
            LOG.info('Operation %(op)s %(status)s (paused %(pause)s ms)',
                     {'op': operation_id, 'status': report['status'],
                      'pause': report['pause_ms']})
        metrics.task_done(self.host, action, task, report)
        self._report(ctxt, operation_id, report)

    def _keep_outcome(self, ctxt, operation_id, report):
        """Remember an outcome the journal could not store, and send it."""
        with self._reports_lock:
            self._outcomes[operation_id] = {'report': report,
                                            'acked': False}
        self._report(ctxt, operation_id, report)

    # -- reports: sent, re-sent until acknowledged --------------------------
    def _report(self, ctxt, operation_id, report):
        with self._reports_lock:
            previous = self._schedule.get(operation_id)
            delay = self.resend_interval if previous is None else min(
                previous[1] * 2, self.resend_max_interval)
            self._schedule[operation_id] = (time.monotonic() + delay, delay)
        try:
            self.conductor_api.report_operation(ctxt, operation_id, report,
                                                host=self.host)
        except Exception:
            # The journal keeps the report; it is sent again until the
            # conductor acknowledges it.
            LOG.exception('Could not send the report of %(op)s',
                          {'op': operation_id})

    def resend_due(self, ctxt, force=False):
        """Send again every report the conductor has not acknowledged
        whose time has come; with ``force`` (at start-up), also those not
        yet sent by this process.  Journal the outcomes kept in memory
        once the disk allows.

        :returns: the number of reports sent.
        """
        self._journal_outcomes()
        pending = {}
        for entry in self.journal.unacknowledged():
            if isinstance(entry.get('report'), dict):
                pending[entry['operation_id']] = entry['report']
        with self._reports_lock:
            for op_id, outcome in self._outcomes.items():
                if not outcome['acked']:
                    pending[op_id] = outcome['report']
            now = time.monotonic()
            due = []
            for op_id in sorted(pending):
                planned = self._schedule.get(op_id)
                if planned is None and not force:
                    # First seen here (its first send is in flight, or
                    # it came from an earlier run): give it one interval.
                    self._schedule[op_id] = (now + self.resend_interval,
                                             self.resend_interval / 2.0)
                elif planned is None or planned[0] <= now:
                    due.append(op_id)
            for op_id in set(self._schedule) - set(pending):
                del self._schedule[op_id]
        for op_id in due:
            LOG.info('Re-sending the unacknowledged report of %(op)s',
                     {'op': op_id})
            self._report(ctxt, op_id, pending[op_id])
        return len(due)

    def _journal_outcomes(self):
        with self._reports_lock:
            kept = dict(self._outcomes)
        for op_id, outcome in kept.items():
            try:
                self.journal.record(op_id, state='done',
                                    report=outcome['report'])
                if outcome['acked']:
                    self.journal.acknowledge(op_id)
            except exception.JournalUnavailable:
                return  # still full; try again next time
            with self._reports_lock:
                self._outcomes.pop(op_id, None)
            LOG.info('Outcome of %(op)s journaled at last', {'op': op_id})

    def acknowledge(self, operation_id):
        """The conductor has applied the operation's report: stop sending
        it and prune it from the journal.
        """
        if not self.journal.valid_id(operation_id):
            return
        with self._reports_lock:
            self._schedule.pop(operation_id, None)
            outcome = self._outcomes.get(operation_id)
            if outcome is not None:
                outcome['acked'] = True
        try:
            if outcome is not None:
                self.journal.record(operation_id, state='done',
                                    report=outcome['report'])
            self.journal.acknowledge(operation_id)
        except ValueError:
            return
        except exception.JournalUnavailable as exc:
            LOG.warning('Acknowledgement of %(op)s not journaled yet: '
                        '%(error)s', {'op': operation_id, 'error': exc})
            return
        if outcome is not None:
            with self._reports_lock:
                self._outcomes.pop(operation_id, None)

    # -- the conductor's questions ------------------------------------------
    def abandon(self, operation_id):
        """The conductor gives up on an operation: unless this agent has
        already seen it, journal it ``abandoned`` so that a late copy of
        its task is refused.

        :returns: ``{'state': 'abandoned'}``, or how the operation stands
            if the agent had seen it (``running``, or ``done`` with its
            report); None for a malformed id.
        :raises: JournalUnavailable (the conductor then keeps the disk
            locked and asks again later).
        """
        if not self.journal.valid_id(operation_id):
            return None
        with self._running_lock:
            if operation_id in self._running:
                return {'state': 'running', 'report': None}
            with self._reports_lock:
                outcome = self._outcomes.get(operation_id)
            if outcome is not None:
                return {'state': 'done', 'report': outcome['report']}
            try:
                entry = self.journal.abandon(operation_id)
            except ValueError:
                return None
        if entry.get('state') == 'abandoned':
            LOG.warning('Operation %(op)s abandoned by the conductor; a '
                        'late task for it will be refused',
                        {'op': operation_id})
        return {'state': entry.get('state'), 'report': entry.get('report')}

    def operation_state(self, operation_id):
        """What this agent knows of an operation, for the conductor.

        An operation the journal shows ``running`` that no task runs (its
        task ended on an error, say a journal write on a full disk) is not
        answered "running" for ever: it is run again (every step is
        idempotent), and that run ends with a report like any other.
        :returns: ``{'state', 'report'}`` or None if never seen.
        """
        if not self.journal.valid_id(operation_id):
            return None
        with self._running_lock:
            running = operation_id in self._running
        with self._reports_lock:
            outcome = self._outcomes.get(operation_id)
        if outcome is not None:
            return {'state': 'done', 'report': outcome['report']}
        try:
            entry = self.journal.get(operation_id)
        except ValueError:
            return None
        if entry is None:
            return None
        if entry.get('state') == 'running' and not running and \
                self.recovered.is_set():
            self._rerun(entry)
        return {'state': entry.get('state'), 'report': entry.get('report')}

    def rerun_dead(self):
        """Run again every operation the journal shows running that no
        task runs (called periodically, after the start-up replay), so a
        task that died is noticed without waiting for the conductor to
        ask.  :returns: the number started again.
        """
        if not self.recovered.is_set():
            return 0
        started = 0
        for entry in self.journal.unfinished():
            with self._running_lock:
                if entry['operation_id'] in self._running:
                    continue
            if entry.get('state') == 'running':
                started += self._rerun(entry)
        return started

    def _rerun(self, entry):
        operation_id = entry['operation_id']
        if not entry.get('task') or not entry.get('action'):
            return 0
        with self._running_lock:
            if operation_id in self._rerunning:
                return 0
            self._rerunning.add(operation_id)
        LOG.warning('Operation %(op)s is running in the journal but no task '
                    'runs it (it ended at step %(step)s); running it again',
                    {'op': operation_id, 'step': entry.get('step')})

        def rerun():
            try:
                recovery.resume_paused(self.driver, self.journal, entry)
                self.run(context.make(), entry['action'], entry['task'],
                         recovering=True)
            except Exception:
                LOG.exception('Re-run of %(op)s failed', {'op': operation_id})
            finally:
                with self._running_lock:
                    self._rerunning.discard(operation_id)

        threading.Thread(target=rerun, name='rerun-%s' % operation_id,
                         daemon=True).start()
        return 1

    # -- a guest left frozen ---------------------------------------------
    def retry_thaw(self, entry):
        """Thaw again, in a background thread, the guest of the journal's
        ``entry`` that an operation left frozen (its ``thaw`` failed, or
        recovery's did): ``Driver.thaw_guest`` after
        ``thaw_retry_interval`` seconds, then twice as long each time,
        until the guest is thawed or ``thaw_retry_timeout`` seconds have
        passed.  Every attempt is journaled (``thaw_attempts``,
        ``thaw_error``); a thaw clears ``frozen``.  Past the deadline the
        entry stays ``frozen`` and the agent's next start thaws it.  No
        attempt is made while another running operation has frozen the
        same guest (its own thaw follows; a retry must not cut its freeze
        short).

        :returns: the thread, or None if one already thaws that guest.
        """
        operation_id = entry['operation_id']
        with self._running_lock:
            if operation_id in self._thawing:
                return None
            self._thawing.add(operation_id)
        thread = threading.Thread(target=self._thaw_loop, args=(entry,),
                                  name='thaw-%s' % operation_id,
                                  daemon=True)
        thread.start()
        return thread

    def _thaw_loop(self, entry):
        operation_id = entry['operation_id']
        deadline = time.monotonic() + self.thaw_retry_timeout
        delay = self.thaw_retry_interval
        attempts = entry.get('thaw_attempts') or 0
        try:
            disk = validation.validate(entry.get('action'),
                                       entry.get('task'))['disk']
            lock = self._guest_lock(disk)
            while True:
                time.sleep(max(0.0, min(delay,
                                        deadline - time.monotonic())))
                thawed = None
                if lock.acquire(
                        timeout=max(0.0, deadline - time.monotonic())):
                    try:
                        thawed = self._thaw_once(operation_id, disk,
                                                 attempts + 1)
                    finally:
                        lock.release()
                if thawed:
                    return
                if thawed is False:
                    attempts += 1
                if time.monotonic() >= deadline:
                    LOG.error('Gave up thawing the guest of %(op)s after '
                              '%(n)d retries; the journal keeps it frozen '
                              'and the agent\'s next start thaws it',
                              {'op': operation_id, 'n': attempts})
                    return
                if thawed is False:
                    delay *= 2
        except Exception:
            LOG.exception('Thaw retries of %(op)s failed',
                          {'op': operation_id})
        finally:
            with self._running_lock:
                self._thawing.discard(operation_id)

    def _thaw_once(self, operation_id, disk, attempt):
        """Attempt ``attempt`` at thawing the guest of ``operation_id``,
        with the guest's lock held.

        :returns: True if thawed, False if the thaw failed, None if no
            attempt was made (another running operation has the guest
            frozen: its own thaw follows).
        """
        if self._frozen_by_another(operation_id, disk):
            return None
        try:
            self.driver.thaw_guest(disk)
        except Exception as exc:
            LOG.warning('Thaw %(n)d of the guest of %(op)s failed: '
                        '%(exc)s', {'n': attempt, 'op': operation_id,
                                    'exc': exc})
            self.journal.record(operation_id, durable=False,
                                thaw_attempts=attempt,
                                thaw_error=str(exc)[:255])
            return False
        done = self.journal.record(operation_id, thaw_attempts=attempt,
                                   thaw_error=None, frozen=False)
        LOG.warning('Thawed the guest of %(op)s at retry %(n)d',
                    {'op': operation_id, 'n': attempt})
        if done.get('acked'):
            # kept live only for the thaw: archive it now
            self.journal.acknowledge(operation_id)
        return True

    def _guest_lock(self, disk):
        """The lock of the guest of ``disk`` (see ``_guest_locks``)."""
        with self._running_lock:
            return self._guest_locks.setdefault(self._guest_of(disk),
                                                threading.Lock())

    @staticmethod
    def _guest_of(disk):
        """What names a disk's guest in its locator: the QEMU guest
        agent's socket, the fake driver's VM or the libvirt domain.
        """
        disk = disk if isinstance(disk, dict) else {}
        return (disk.get('qga_socket'), disk.get('vm'), disk.get('domain'))

    def _frozen_by_another(self, operation_id, disk):
        """True if a running operation other than ``operation_id`` has
        the guest of ``disk`` frozen now.
        """
        guest = self._guest_of(disk)
        with self._running_lock:
            running = set(self._running)
        for entry in self.journal.unfinished():
            task = entry.get('task')
            if entry.get('operation_id') != operation_id and \
                    entry.get('operation_id') in running and \
                    entry.get('frozen') and isinstance(task, dict) and \
                    self._guest_of(task.get('disk')) == guest:
                return True
        return False

    def _journal_listener(self, action, operation_id):
        """Write ahead: the journal knows each step before it is taken.

        While the VM is paused nothing is written: an fsync there would
        lengthen the pause, and recovery needs only to know that the VM
        was paused (written before ``stop``), since every step is
        idempotent and the operation is run again whole.  That record is
        fsynced; the other step boundaries are written without fsync (they
        survive a crash of the agent, which is what they are for).
        """
        state = {'paused': False}

        def listener(event, name, detail):
            if event == 'paused':
                state['paused'] = True
            elif event == 'resumed':
                state['paused'] = False
                self.journal.record(operation_id, durable=False,
                                    paused=False, step_done=name)
            elif event == 'start':
                if not state['paused']:
                    fields = {'step': name}
                    if name == 'pause':
                        # durably: a restart after a host crash must know
                        fields['paused'] = bool(
                            detail.get('was_running', True))
                    elif name == 'freeze':
                        # durably, before the freeze is sent: a restarted
                        # agent thaws the guest (agent.recovery)
                        fields['frozen'] = True
                    self.journal.record(
                        operation_id, durable=name in ('pause', 'freeze'),
                        **fields)
                faults.point(action, name, 'before')
            elif event == 'end':
                if not state['paused']:
                    fields = {'frozen': False} if name == 'thaw' else {}
                    self.journal.record(operation_id, durable=False,
                                        step_done=name, **fields)
                faults.point(action, name, 'after')
        return listener

    def inspect(self, locators):
        """What the audit needs (``Driver.inspect``), the agent's journal
        aside: a file under its directory is never reported.
        """
        if not isinstance(locators, list):
            locators = []
        result = self.driver.inspect(locators)
        journal_dir = os.path.realpath(
            getattr(self.journal, 'directory', None) or '/nonexistent')
        named = {os.path.realpath(i['locator']['path'])
                 for i in result.get('images', [])
                 if isinstance(i.get('locator'), dict)
                 and isinstance(i['locator'].get('path'), str)}
        files = []
        for found in result.get('files', []):
            if isinstance(found, str):
                # A driver written before files carried their locator
                # lists every file: keep those no locator names.
                if os.path.realpath(found) in named:
                    continue
                found = {'path': found, 'locator': None}
            if os.path.commonpath([os.path.realpath(found['path']),
                                   journal_dir]) != journal_dir:
                files.append(found)
        result['files'] = files
        return result

    def inspect_images(self, image_paths):
        """``inspect`` for a conductor older than agent RPC 1.4 (QEMU
        images by path): ``{"images": {path: info}, "files": [paths]}``.
        """
        if not isinstance(image_paths, list):
            image_paths = []
        locators = [{'driver': self.driver.name, 'path': p}
                    for p in image_paths if isinstance(p, str)]
        result = self.inspect(locators)
        images = {}
        for info in result['images']:
            out = {'exists': info['exists']}
            if info.get('error'):
                out['error'] = info['error']
            elif info['exists']:
                out['backing'] = (info['backing'] or {}).get('path')
                out['check'] = info['check']
            images[info['locator']['path']] = out
        return {'images': images,
                'files': [f['path'] for f in result['files']]}

    def remove_image(self, path):
        """Remove an orphaned file (audit repair); refuses open ones."""
        return self.driver.remove(path)

    def disk_online(self, disk):
        """True if a running VM uses ``disk`` (a disk locator)."""
        try:
            self.driver.check(disk, 'disk')
        except exception.AgentError:
            return False
        return self.driver.is_online(disk)

    def server_running(self, qmp_socket):
        """``disk_online`` for a conductor older than agent RPC 1.4."""
        if not isinstance(qmp_socket, str) or not qmp_socket:
            return False
        return self.driver.is_online({'driver': self.driver.name,
                                      'qmp_socket': qmp_socket})

    def list_vms(self):
        """The host's VMs as the driver sees them (``Driver.list_vms``)."""
        return self.driver.list_vms()

    def describe_vm(self, domain):
        """The ``list_vms`` entry whose name or UUID is ``domain`` (a
        UUID compared without case), or None.
        """
        if not isinstance(domain, str) or not domain:
            return None
        for vm in self.driver.list_vms():
            if vm.get('name') == domain or \
                    str(vm.get('uuid', '')).lower() == domain.lower():
                return vm
        return None

    def _progress_cb(self, ctxt, operation_id):
        """A copy's progress callback: one message per
        ``progress_interval`` at most, none in a copy's first interval and
        none at 100 (the report ends the operation at 100), so a short
        merge costs no message and no database write.
        """
        state = {'next': time.monotonic() + self.progress_interval,
                 'sent': None}

        def progress(percent):
            now = time.monotonic()
            if percent >= 100.0 or percent == state['sent'] or \
                    now < state['next']:
                return
            state['next'] = now + self.progress_interval
            state['sent'] = percent
            try:
                self.conductor_api.report_progress(ctxt, operation_id,
                                                   percent)
            except Exception:
                LOG.debug('Progress of %(op)s not sent', {'op': operation_id})
        return progress

    def _quiesce(self, task):
        """What a create task's ``quiesce`` (agent RPC 1.7; groups 1.9)
        asks of the driver: ``{"quiesce": mode}`` when the driver takes
        it for the (first) disk (``Driver.can_quiesce``), else nothing,
        and the reason the snapshot is then crash-consistent.

        :returns: (keyword arguments for the driver, reason or None)
        :raises QuiesceFailed: ``required`` and the driver cannot.
        """
        quiesce = task.get('quiesce')
        if quiesce is None:
            return {}, None
        if self.driver.can_quiesce(task['disk']):
            return {'quiesce': quiesce}, None
        if quiesce == 'required':
            raise exception.QuiesceFailed(
                'Quiesce required but the %s driver cannot freeze this '
                'guest' % self.driver.name)
        if quiesce == 'off':
            return {}, 'quiesce off'
        return {}, 'the %s driver cannot freeze this guest' % self.driver.name

    @staticmethod
    def _crash(result, reason):
        if reason is not None:
            result.setdefault('consistency', 'crash')
            result.setdefault('consistency_reason', reason)
        return result

    def _frozen_guest(self, disk, kwargs):
        """The guest's lock while a freeze may be in force (``quiesce``
        other than ``off``), so no thaw retry cuts it short; else a
        context that holds nothing.
        """
        if kwargs.get('quiesce') in (None, 'off'):
            return contextlib.nullcontext()
        return self._guest_lock(disk)

    def _create_snapshot(self, ctxt, task, rec):
        kwargs, reason = self._quiesce(task)
        with self._frozen_guest(task['disk'], kwargs):
            result = self.driver.create_snapshot(
                task['disk'], task['layer_name'], rec, **kwargs)
        return self._crash(result, reason)

    def _create_snapshots(self, ctxt, task, rec):
        kwargs, reason = self._quiesce(task)
        with self._frozen_guest(task['disks'][0], kwargs):
            result = self.driver.create_snapshots(task['disks'],
                                                  task['layer_names'], rec,
                                                  **kwargs)
        for snapshot in result.get('snapshots') or []:
            self._crash(snapshot, reason)
        return result

    def _delete_snapshot(self, ctxt, task, rec):
        if task['mode'] == 'physical':
            return self.driver.delete_image(task['snapshot'], rec)
        cancel = self._cancel.setdefault(task['operation_id'],
                                         threading.Event())
        try:
            return self.driver.merge(
                task['disk'], task['snapshot'], task.get('parent'),
                task['child'], rec,
                progress=self._progress_cb(ctxt, task['operation_id']),
                child_is_leaf=task.get('child_is_leaf', False),
                cancelled=cancel.is_set)
        finally:
            self._cancel.pop(task['operation_id'], None)

    def cancel(self, operation_id):
        """An administrator cancels ``operation_id``: a merge still copying
        stops, drops its block job and fails with ``cancelled``, leaving
        the images as they were.  Anything else runs to its end (creates
        and the paused part of a merge take milliseconds).

        :returns: ``{"cancelling": bool}``: whether a copy will stop.
        """
        event = self._cancel.get(operation_id)
        if event is None:
            return {'cancelling': False}
        event.set()
        LOG.warning('Operation %(op)s cancelled by an administrator',
                    {'op': operation_id})
        return {'cancelling': True}

    def _clone_snapshot(self, ctxt, task, rec):
        return self.driver.clone(
            task['snapshot'], task['layer_name'], task['mode'], rec,
            progress=self._progress_cb(ctxt, task['operation_id']))

    def _revert_disk(self, ctxt, task, rec):
        result = self.driver.revert(task['disk'], task['snapshot'],
                                    task['layer_name'], rec)
        discard = task.get('discard')
        if discard and discard.get('path') == \
                (result.get('disk') or {}).get('path'):
            # The driver kept the live layer at the disk's path: the
            # revert itself discarded the old one (issue 20).
            discard = None
        if discard:
            try:
                self.driver.delete_image(discard, rec)
            except Exception:
                # Leave the disk as it was: the old live layer stays.
                self.driver.delete_image(
                    self.driver.layer_locator(task['disk'],
                                              task['layer_name']),
                    steps_mod.StepRecorder())
                raise
        return result
