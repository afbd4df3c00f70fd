"""The python-openstackclient plugin: ``openstack livesnap ...``.

python-openstackclient finds this module through the
``openstack.cli.extension`` entry point ``livesnap`` and its commands in the
``openstack.livesnap.v1`` namespace. It authenticates as for every other
service (``OS_*`` variables, ``--os-cloud`` and clouds.yaml) and finds the
API in the service catalog under the service type ``livesnap``, or at the
``livesnap_endpoint_override`` of the cloud's clouds.yaml entry.
"""

from osc_lib import utils

from livesnapclient import client

DEFAULT_API_VERSION = "1"
API_VERSION_OPTION = "os_livesnap_api_version"
API_NAME = "livesnap"
API_VERSIONS = {"1": "livesnapclient.client.Client"}


def make_client(instance):
    """Build the livesnap client of python-openstackclient's ClientManager.

    :param instance: the ``osc_lib.clientmanager.ClientManager``.
    :returns: a :class:`livesnapclient.client.Client` on its session.
    """
    endpoint = None
    cli_options = getattr(instance, "_cli_options", None)
    if cli_options is not None:
        # clouds.yaml's livesnap_endpoint_override, or the endpoint of
        # --os-auth-type none / admin_token.
        endpoint = cli_options.get_endpoint(client.SERVICE_TYPE)
    return client.Client(instance.session, endpoint_override=endpoint,
                         interface=instance.interface,
                         region_name=instance.region_name)


def build_option_parser(parser):
    """Add the plugin's global options to the ``openstack`` parser."""
    parser.add_argument(
        "--os-livesnap-api-version",
        metavar="<livesnap-api-version>",
        default=utils.env("OS_LIVESNAP_API_VERSION",
                          default=DEFAULT_API_VERSION),
        help="livesnap API version, default %s "
             "(env OS_LIVESNAP_API_VERSION)" % DEFAULT_API_VERSION)
    return parser
