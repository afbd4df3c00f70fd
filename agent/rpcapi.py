"""Client side of the agent RPC API (used by the conductor).

Tasks are casts on topic ``livesnap-agent`` to ``server=<host>``; each task
carries the conductor's operation id and is idempotent, so re-sending one
is always safe.  The agent answers with a cast of
``ConductorAPI.report_operation``, which it repeats until the conductor
acknowledges it with ``ack_report``.

API version history:

* 1.0 - Initial version: create_snapshot, delete_snapshot, revert_disk
        (each with an ``expires_at`` deadline), get_operation,
        server_running, inspect_images, remove_image.
* 1.1 - Added ack_report: the conductor has applied a report; the agent
        stops re-sending it and prunes its journal entry.
* 1.2 - Added abandon_operation: the conductor gives up on an operation
        and the agent refuses its task from then on.  get_operation may
        answer the state ``abandoned``.
* 1.3 - Added cancel_operation: an administrator stops a merge that is
        still copying.
* 1.4 - Locator tasks: create_snapshot, delete_snapshot and revert_disk
        take tasks whose disks and layers are driver-tagged locators (see
        livesnap.tasks); added disk_online, inspect_layers and list_vms.
        The oldest version a conductor serves
        (``conductor.agent_versions.MINIMUM``): it sends no path task
        of 1.0 to 1.3, nor server_running or inspect_images (which the
        agent still serves).
* 1.5 - Added describe_vm: one VM of the host's driver by name or UUID
        (registration by domain).
* 1.6 - Added create_snapshots: several disks of one VM snapshotted under
        one pause (one QMP transaction); the conductor refuses a snapshot
        group (409) for a host whose agent is older.
* 1.7 - create_snapshot's task may carry ``quiesce`` (required, preferred
        or off): the agent freezes the guest's filesystems around the
        pause; its result says ``consistency`` and ``consistency_reason``.
        A conductor sends the field only to an agent of 1.7 or later.
* 1.8 - Added clone_snapshot: a new image from a snapshot, a full copy
        (``flat``) or a layer on it (``linked``).  The conductor refuses a
        clone (409) while the snapshot's host cannot take 1.8.
* 1.9 - create_snapshots's task may carry ``quiesce`` (required,
        preferred or off): one freeze of the guest before the group's
        pause, one thaw after it; every member's result says
        ``consistency`` and ``consistency_reason``.  A conductor sends the
        field only to an agent of 1.9 or later (an older one's group is
        crash-consistent, and ``required`` is refused with 400).
"""

from livesnap import rpc

RPC_API_VERSION = '1.9'


class AgentAPI(object):
    """The conductor's client of the agents.

    The conductor pins it for rolling upgrades
    (``conductor.agent_versions.client``): a message to a host never
    carries a version above the one that host's agent reported in its
    heartbeats, and ``self.client``'s ``version_cap`` is the lowest
    version among the hosts that are up.  A method whose version is above
    the pin raises ``RPCVersionCapError`` before anything is sent.

    :param version_cap: pin every message to this version (None: this
        module's ``RPC_API_VERSION``).
    :param host_cap: ``host -> version``: pin each message to its host's
        version instead (None: ``version_cap`` for every host).
    """

    def __init__(self, version_cap=None, host_cap=None):
        if version_cap is None:
            version_cap = RPC_API_VERSION
        if host_cap is None:
            self._host_cap = lambda host: version_cap
        else:
            self._host_cap = host_cap
        target = rpc.messaging.Target(topic=rpc.AGENT_TOPIC,
                                      version=RPC_API_VERSION)
        self.client = rpc.get_client(target, version_cap=version_cap)

    def _prepare(self, host, version='1.0', **kwargs):
        return self.client.prepare(server=host, version=version,
                                   version_cap=self._host_cap(host),
                                   **kwargs)

    def can_send_version(self, version, host=None):
        """Whether a message of ``version`` may be sent now: to ``host``
        (by what it reported), or to every host that is up (None).
        """
        if host is None:
            return self.client.can_send_version(version)
        return self._prepare(host).can_send_version(version)

    @staticmethod
    def _task_version(task):
        return '1.7' if 'quiesce' in task else '1.4'

    def create_snapshot(self, ctxt, host, task, expires_at=None):
        """Pause, pivot the disk onto ``task['new_image']``, resume.

        ``expires_at`` (UNIX time): an agent that receives the task later
        and never started it refuses it.
        """
        self._prepare(host, self._task_version(task)).cast(
            ctxt, 'create_snapshot', task=task, expires_at=expires_at)

    def create_snapshots(self, ctxt, host, task, expires_at=None):
        """Pause once, pivot every disk of ``task['disks']`` in one QMP
        transaction, resume (1.6); with ``quiesce`` in the task, freeze
        the guest once around it (1.9).
        """
        self._prepare(host, '1.9' if 'quiesce' in task else '1.6').cast(
            ctxt, 'create_snapshots', task=task, expires_at=expires_at)

    def delete_snapshot(self, ctxt, host, task, expires_at=None):
        """Delete physically (``mode=physical``) or merge (``mode=merge``)."""
        self._prepare(host, self._task_version(task)).cast(
            ctxt, 'delete_snapshot', task=task, expires_at=expires_at)

    def revert_disk(self, ctxt, host, task, expires_at=None):
        """Put a new active image on top of a snapshot (server shut off)."""
        self._prepare(host, self._task_version(task)).cast(
            ctxt, 'revert_disk', task=task, expires_at=expires_at)

    def clone_snapshot(self, ctxt, host, task, expires_at=None):
        """Make a new image from a snapshot (1.8)."""
        self._prepare(host, '1.8').cast(
            ctxt, 'clone_snapshot', task=task, expires_at=expires_at)

    def inspect_layers(self, ctxt, host, locators, timeout=60):
        """For the audit: each disk's and snapshot's state (by locator)
        and the files no locator names (1.4; ``Driver.inspect``).
        """
        return self._prepare(host, version='1.4', timeout=timeout).call(
            ctxt, 'inspect_layers', locators=locators)

    def disk_online(self, ctxt, host, disk, timeout=10):
        """Whether a running VM uses ``disk``, a disk locator (1.4)."""
        return self._prepare(host, version='1.4', timeout=timeout).call(
            ctxt, 'disk_online', disk=disk)

    def list_vms(self, ctxt, host, timeout=30):
        """The VMs the host's driver sees (1.4; ``Driver.list_vms``)."""
        return self._prepare(host, version='1.4', timeout=timeout).call(
            ctxt, 'list_vms')

    def describe_vm(self, ctxt, host, domain, timeout=30):
        """One VM the host's driver sees, by name or UUID (1.5): its
        ``Driver.list_vms`` entry, or None.
        """
        return self._prepare(host, version='1.5', timeout=timeout).call(
            ctxt, 'describe_vm', domain=domain)

    def remove_image(self, ctxt, host, path, timeout=60):
        """For the audit's repair: remove an orphaned, unused image."""
        return self._prepare(host, timeout=timeout).call(
            ctxt, 'remove_image', path=path)

    def get_operation(self, ctxt, host, operation_id, timeout=10):
        """Ask the agent what its journal says about an operation."""
        return self._prepare(host, timeout=timeout).call(
            ctxt, 'get_operation', operation_id=operation_id)

    def ack_report(self, ctxt, host, operation_id):
        """The conductor has committed the operation's report: the agent
        stops re-sending it and prunes it from its journal.
        """
        self._prepare(host, version='1.1').cast(
            ctxt, 'ack_report', operation_id=operation_id)

    def abandon_operation(self, ctxt, host, operation_id, timeout=10):
        """Give up on an operation: the agent journals it ``abandoned``
        and refuses its task from then on, unless it had already seen it.

        :returns: ``{'state': 'abandoned'}``, or how the operation stands
            on the agent (``running``, or ``done`` with its ``report``).
        """
        return self._prepare(host, version='1.2', timeout=timeout).call(
            ctxt, 'abandon_operation', operation_id=operation_id)

    def cancel_operation(self, ctxt, host, operation_id, timeout=10):
        """Stop a merge that is still copying; it fails with ``cancelled``.

        :returns: ``{'cancelling': bool}``.
        """
        return self._prepare(host, version='1.3', timeout=timeout).call(
            ctxt, 'cancel_operation', operation_id=operation_id)
