"""Client of the livesnap REST API: a keystoneauth1-based REST client, the
cliff commands of the ``livesnap`` command and the ``openstack livesnap``
plugin of python-openstackclient."""
