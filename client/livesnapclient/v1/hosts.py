"""``host list`` (admin): hypervisor hosts and their agents' state."""

from cliff import lister

from livesnapclient import format as fmt


class ListHost(lister.Lister):
    """List hypervisor hosts and whether their agents report (admin)."""

    def take_action(self, parsed_args):
        hosts = self.app.client_manager.livesnap.list_hosts()
        return (("Host", "State", "Last heartbeat", "Agent started",
                 "Version", "Agent API", "Image dirs"),
                fmt.rows(hosts, ("name", "state", "last_heartbeat",
                                 "agent_started_at", "version",
                                 "rpc_version", "image_dirs"),
                         {"image_dirs": fmt.Names}))
