"""The cliff commands of API v1, shared by ``livesnap`` and ``openstack``.

Each command reaches the API through ``self.app.client_manager.livesnap``,
a :class:`livesnapclient.client.Client`: python-openstackclient builds it
with :func:`livesnapclient.osc.plugin.make_client`, the ``livesnap`` command
in :mod:`livesnapclient.shell`.
"""
