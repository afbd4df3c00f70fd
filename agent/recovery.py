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
retry) get step 1 too.  Last, every report the conductor has not yet
acknowledged is sent again.
"""

import logging

import tenacity

from agent import qmp
from livesnap import context

LOG = logging.getLogger(__name__)


@tenacity.retry(stop=tenacity.stop_after_attempt(5),
                wait=tenacity.wait_exponential(multiplier=0.1, max=2),
                reraise=True)
def _resume(socket_path, timeout):
    with qmp.QMPSession(socket_path, timeout=timeout) as session:
        if session.status() == 'paused':
            session.execute('cont')
            return True
    return False


def resume_paused(journal, entry, qmp_timeout=5.0):
    """Resume the VM an interrupted operation paused.  :returns: bool."""
    sock = (entry.get('task') or {}).get('disk', {}).get('qmp_socket')
    if not entry.get('paused') or not sock or not qmp.is_running(sock):
        return False
    try:
        resumed = _resume(sock, qmp_timeout)
    except Exception:
        LOG.exception('Could not resume the VM at %(sock)s left paused by '
                      'operation %(op)s', {'sock': sock,
                                           'op': entry['operation_id']})
        return False
    journal.record(entry['operation_id'], paused=False)
    if resumed:
        LOG.warning('Resumed the VM at %(sock)s, left paused by operation '
                    '%(op)s at step %(step)s', {
                        'sock': sock, 'op': entry['operation_id'],
                        'step': entry.get('step')})
    return resumed


def paused_entries(journal):
    return [e for e in journal.entries() if e.get('paused')]


def recover(runner, qmp_timeout=5.0):
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
                      if resume_paused(journal, e, qmp_timeout))
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
