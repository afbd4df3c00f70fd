"""``livesnap-all-in-one``: conductor, API and agent in one process.

The embedded deployment for one machine: with the default
``transport_url = kombu+memory:////`` the bus lives inside this process,
so no broker is needed.  With ``--transport-url rabbit://...`` it is the
same as running ``livesnap-conductor`` and ``livesnap-agent`` apart.
"""

import sys

from agent import service as agent_service
from conductor import service as conductor_service
from livesnap import service as common_service


def main(argv=None):
    common_service.prepare('livesnap-all-in-one', argv)
    conductor = conductor_service.ConductorService()
    conductor.start()
    agent = agent_service.AgentService()
    agent.start()
    common_service.wait_for_signal()
    agent.stop()
    conductor.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
