"""Journal replay when the agent starts: no VM stays paused, no operation
stays half done.

For every operation the journal shows as started and not ended:

1. if the journal says this agent paused the VM and it did not record the
   resume, and the VM is paused now, resume it (with retries);
2. run the task again.  Every driver step is idempotent, so this finishes
   what was begun (a pivot that happened is kept, an overlay that was made
   but not pivoted is reused, a merge job left pending is adopted) and the
   outcome is reported to the conductor as usual.

Operations that ended but left a VM paused (resume failed after every
retry) get step 1 too.  Then (a paused guest cannot answer) a guest the
journal shows frozen (a ``freeze`` step begun, its ``thaw`` not ended: the
agent died between the two, or the thaw failed) is thawed:
``guest-fsfreeze-status``, then ``guest-fsfreeze-thaw``; a guest of an
ended operation that does not thaw is retried in the background
(``TaskRunner.retry_thaw``).  Last, every report the conductor has not yet
acknowledged is sent again.
"""

import logging

from agent import exception
from agent import validation
from livesnap import context

LOG = logging.getLogger(__name__)


def resume_paused(driver, journal, entry):
    """Resume the VM an interrupted operation paused (``Driver.resume``,
    which retries).  :returns: bool.
    """
    if not entry.get('paused'):
        return False
    try:
        disk = validation.validate(entry.get('action'),
                                   entry.get('task'))['disk']
        driver.check(disk, 'disk')
        if not driver.is_online(disk):
            return False
    except exception.AgentError:
        return False
    try:
        resumed = driver.resume(disk)
    except Exception:
        LOG.exception('Could not resume the VM of %(disk)s left paused by '
                      'operation %(op)s', {'disk': disk,
                                           'op': entry['operation_id']})
        return False
    journal.record(entry['operation_id'], paused=False)
    if resumed:
        LOG.warning('Resumed the VM of %(disk)s, left paused by operation '
                    '%(op)s at step %(step)s', {
                        'disk': disk, 'op': entry['operation_id'],
                        'step': entry.get('step')})
    return resumed


def thaw_frozen(driver, journal, entry):
    """Thaw the guest an interrupted operation froze (``thaw_guest`` of
    the driver).  :returns: bool (it was frozen and is thawed now).
    """
    if not entry.get('frozen'):
        return False
    try:
        disk = validation.validate(entry.get('action'),
                                   entry.get('task'))['disk']
        driver.check(disk, 'disk')
        thawed = driver.thaw_guest(disk)
    except Exception as exc:
        LOG.error('Could not thaw the guest of operation %(op)s: %(exc)s',
                  {'op': entry['operation_id'], 'exc': exc})
        return False
    journal.record(entry['operation_id'], frozen=False)
    if thawed:
        LOG.warning('Thawed the guest of %(disk)s, left frozen by operation '
                    '%(op)s', {'disk': disk, 'op': entry['operation_id']})
    return thawed


def paused_entries(journal):
    return [e for e in journal.entries() if e.get('paused')]


def recover(runner):
    """Resume paused VMs, finish every unfinished operation, then send
    again every report the conductor has not acknowledged.

    Reads the journal's live entries only (not its archive of
    acknowledged ones), so it takes as long as there is work left, not
    as long as the host's history.  Sets ``runner.recovered`` when done,
    even on error, so the agent's other recovery paths may start.
    :returns: (VMs resumed, operations replayed)
    """
    journal = runner.journal
    try:
        resumed = sum(1 for e in paused_entries(journal)
                      if resume_paused(runner.driver, journal, e))
        # After the resume: a paused guest's agent cannot answer.
        for entry in journal.entries():
            if entry.get('frozen') and not thaw_frozen(
                    runner.driver, journal, entry) and \
                    entry.get('state') == 'done' and \
                    (journal.get(entry['operation_id']) or {}).get('frozen'):
                # An unfinished one is run again below, thaw included.
                runner.retry_thaw(entry)
        replayed = 0
        for entry in journal.unfinished():
            if not entry.get('task') or not entry.get('action'):
                continue
            LOG.warning('Replaying operation %(op)s (%(action)s), '
                        'interrupted at step %(step)s',
                        {'op': entry['operation_id'],
                         'action': entry['action'],
                         'step': entry.get('step')})
            runner.run(context.make(), entry['action'], entry['task'],
                       recovering=True)
            replayed += 1
    finally:
        runner.recovered.set()
    runner.resend_due(context.make(), force=True)
    return resumed, replayed
