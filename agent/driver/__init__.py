"""Hypervisor drivers of the agent, loaded by name.

A driver is a ``agent.driver.base.Driver``, registered under the entry
point group ``livesnap.agent.drivers`` (see setup.cfg); the agent loads the
one ``[agent] driver`` names, the way nova loads ``compute_driver`` and
masakari its notification driver.
"""

from stevedore import driver as stevedore_driver

from agent import exception

#: The entry point group of the agent's drivers.
NAMESPACE = 'livesnap.agent.drivers'


def load(name, image_dirs, **options):
    """Make the driver registered as ``name``.

    :param image_dirs: the directories the driver may touch.
    :param options: keyword arguments for the driver's constructor; each
        driver takes those it knows and ignores the others.
    :returns: an ``agent.driver.base.Driver``.
    :raises InvalidRequest: no driver of that name is installed.
    """
    try:
        manager = stevedore_driver.DriverManager(
            namespace=NAMESPACE, name=name, invoke_on_load=True,
            invoke_args=(list(image_dirs),), invoke_kwds=options)
    except stevedore_driver.NoMatches:
        raise exception.InvalidRequest(
            'No agent driver named %r is installed (entry point group %s)'
            % (name, NAMESPACE))
    return manager.driver
