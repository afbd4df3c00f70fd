"""``livesnap``: the standalone command, a cliff App of the same commands
as ``openstack livesnap``.

Global options may be given before or after the command::

    livesnap --url http://conductor:8780 --token T server list
    livesnap snapshot list srv1 --tree
    livesnap server list -f json -c ID

How it authenticates, first match wins:

- a token (``--token``/``LIVESNAP_TOKEN``): sent as ``X-Auth-Token`` to
  ``--url``/``LIVESNAP_URL`` (default :data:`DEFAULT_URL`), no keystone;
- keystone (``--os-cloud``/``OS_CLOUD`` and clouds.yaml, or the ``OS_*``
  variables such as ``OS_AUTH_URL``): the endpoint comes from the service
  catalog (service type ``livesnap``), or from ``--url``/``LIVESNAP_URL``
  when set;
- neither: requests without a token to ``--url``.

Exit status: 0 on success; 1 on an API error, a connection failure or a
failed operation (``--wait``); 2 on bad usage or when ``--wait`` times out.
"""

import importlib.metadata
import logging
import os
import sys

from cliff import app
from cliff import commandmanager

from livesnapclient import client
from livesnapclient import exceptions

DEFAULT_URL = "http://127.0.0.1:8780"


def _version():
    try:
        return importlib.metadata.version("python-livesnapclient")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def keystone_configured(options):
    """Whether keystone credentials were given (and no static token)."""
    return not options.token and bool(
        options.os_cloud or os.environ.get("OS_AUTH_URL"))


def make_client(options):
    """Build the API client the global options ask for.

    :param options: the parsed global options of :class:`LivesnapApp`.
    :returns: a :class:`livesnapclient.client.Client`.
    :raises ClientError: when the clouds.yaml entry or the ``OS_*``
        variables are unusable.
    """
    if not keystone_configured(options):
        url = options.url or DEFAULT_URL
        return client.Client(client.fixed_endpoint_session(url,
                                                           options.token),
                             endpoint_override=url)
    # openstacksdk's loader reads clouds.yaml and the OS_* variables as
    # python-openstackclient does (osc-lib depends on it).
    from openstack import config as os_config
    from openstack import exceptions as sdk_exc
    try:
        region = os_config.OpenStackConfig().get_one(
            cloud=options.os_cloud, region_name=options.os_region_name,
            interface=options.os_interface)
        session = region.get_session()
    except (sdk_exc.SDKException, ValueError, KeyError) as exc:
        raise exceptions.ClientError(
            "Error: cannot load the cloud configuration: %s" % exc) from None
    return client.Client(
        session,
        endpoint_override=(options.url
                           or region.get_endpoint(client.SERVICE_TYPE)),
        interface=region.get_interface(client.SERVICE_TYPE),
        region_name=region.get_region_name(client.SERVICE_TYPE))


class ClientManager:
    """What the commands reach as ``self.app.client_manager``: the client
    is built on first use, so ``--help`` needs no credentials.
    """

    def __init__(self, options):
        self._options = options
        self._livesnap = None

    @property
    def livesnap(self):
        if self._livesnap is None:
            self._livesnap = make_client(self._options)
        return self._livesnap


class LivesnapApp(app.App):
    """The ``livesnap`` command: the ``livesnap.cli`` entry points."""

    def __init__(self, stdin=None, stdout=None, stderr=None):
        super().__init__(
            description="Client of the livesnap online snapshot service.",
            version=_version(),
            command_manager=commandmanager.CommandManager("livesnap.cli"),
            deferred_help=True, stdin=stdin, stdout=stdout, stderr=stderr)
        self.client_manager = None

    def build_option_parser(self, description, version,
                            argparse_kwargs=None):
        parser = super().build_option_parser(description, version,
                                             argparse_kwargs)
        parser.add_argument(
            "--url", default=os.environ.get("LIVESNAP_URL"),
            help="API endpoint (env LIVESNAP_URL, default %s; with keystone "
                 "it overrides the service catalog)" % DEFAULT_URL)
        parser.add_argument(
            "--token", default=os.environ.get("LIVESNAP_TOKEN"),
            help="token sent as X-Auth-Token to --url, without keystone "
                 "(env LIVESNAP_TOKEN)")
        parser.add_argument(
            "--os-cloud", default=os.environ.get("OS_CLOUD"),
            help="keystone: the cloud of clouds.yaml to use (env OS_CLOUD; "
                 "without it the OS_* variables are used)")
        parser.add_argument(
            "--os-region-name", default=os.environ.get("OS_REGION_NAME"),
            help="keystone: the catalog region (env OS_REGION_NAME)")
        parser.add_argument(
            "--os-interface", default=os.environ.get("OS_INTERFACE"),
            help="keystone: the catalog interface, public (default), "
                 "internal or admin (env OS_INTERFACE)")
        # Before the command too, as ``livesnap -f json snapshot list S``.
        parser.add_argument(
            "-f", "--format", dest="output_format", metavar="FORMAT",
            help="output format of the command (table, json, yaml, value, "
                 "csv); may also follow the command")
        return parser

    def initialize_app(self, argv):
        self.client_manager = ClientManager(self.options)

    def run_subcommand(self, argv):
        if self.options.output_format:
            argv = list(argv) + ["-f", self.options.output_format]
        return super().run_subcommand(argv)

    def interact(self):
        self.parser.error("a command is required; see livesnap --help")


def main(argv=None, stdout=None, stderr=None):
    """Run the ``livesnap`` command.

    :param argv: arguments without the program name (default ``sys.argv``).
    :returns: the exit status (0 ok, 1 error or failed operation,
        2 usage error or ``--wait`` timeout).
    """
    if argv is None:
        argv = sys.argv[1:]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return LivesnapApp(stdout=stdout, stderr=stderr).run(list(argv))
    finally:
        # cliff adds a console handler per run; leave the caller's logging
        # as it was (tests and tools call main() more than once).
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
