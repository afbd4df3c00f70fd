"""Server side of the agent RPC API: thin endpoints.

Each endpoint only hands its task to ``agent.task_runner.TaskRunner``, which
validates it and does the work.  See ``agent.rpcapi`` for the versions.
"""

from agent import rpcapi
from livesnap import rpc


class AgentManager(object):

    target = rpc.messaging.Target(version=rpcapi.RPC_API_VERSION)

    def __init__(self, runner):
        self.runner = runner

    def create_snapshot(self, ctxt, task, expires_at=None):
        self.runner.run(ctxt, 'create_snapshot', task, expires_at)

    def create_snapshots(self, ctxt, task, expires_at=None):
        """Several disks of one VM under one pause (1.6); ``quiesce`` in
        the task (1.9).
        """
        self.runner.run(ctxt, 'create_snapshots', task, expires_at)

    def delete_snapshot(self, ctxt, task, expires_at=None):
        self.runner.run(ctxt, 'delete_snapshot', task, expires_at)

    def revert_disk(self, ctxt, task, expires_at=None):
        self.runner.run(ctxt, 'revert_disk', task, expires_at)

    def clone_snapshot(self, ctxt, task, expires_at=None):
        """A new image from a snapshot, flat or linked (1.8)."""
        self.runner.run(ctxt, 'clone_snapshot', task, expires_at)

    def server_running(self, ctxt, qmp_socket):
        """True if a QEMU answers on ``qmp_socket`` (running or paused);
        for conductors older than 1.4 (see disk_online).
        """
        return self.runner.server_running(qmp_socket)

    def disk_online(self, ctxt, disk):
        """True if a running VM uses the disk (a disk locator) (1.4)."""
        return self.runner.disk_online(disk)

    def inspect_images(self, ctxt, paths):
        """The audit's look at QEMU images by path; for conductors older
        than 1.4 (see inspect_layers).
        """
        return self.runner.inspect_images(paths)

    def inspect_layers(self, ctxt, locators):
        """The audit's look at disks and snapshots by locator (1.4)."""
        return self.runner.inspect(locators)

    def list_vms(self, ctxt):
        """The VMs the driver sees on this host (1.4)."""
        return self.runner.list_vms()

    def describe_vm(self, ctxt, domain):
        """One VM the driver sees, by name or UUID, or None (1.5)."""
        return self.runner.describe_vm(domain)

    def remove_image(self, ctxt, path):
        return self.runner.remove_image(path)

    def get_operation(self, ctxt, operation_id):
        """What the journal knows of an operation (None if never seen)."""
        return self.runner.operation_state(operation_id)

    def ack_report(self, ctxt, operation_id):
        """The conductor has applied the operation's report (1.1)."""
        self.runner.acknowledge(operation_id)

    def abandon_operation(self, ctxt, operation_id):
        """The conductor gives up on the operation (1.2)."""
        return self.runner.abandon(operation_id)

    def cancel_operation(self, ctxt, operation_id):
        """An administrator cancels a merge that is still copying (1.3)."""
        return self.runner.cancel(operation_id)
