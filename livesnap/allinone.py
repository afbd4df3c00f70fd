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
    return common_service.serve(
        'livesnap-all-in-one',
        [conductor_service.ConductorService, agent_service.AgentService],
        argv)


if __name__ == '__main__':
    sys.exit(main())
