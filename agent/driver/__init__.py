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


def load(name, image_dirs, conf=None, **options):
    """Make the driver registered as ``name``.

    A driver gets its settings as constructor arguments only: from
    ``conf`` (the driver's ``conf_options``) when it is given, then from
    ``options``, which win.

    :param image_dirs: the directories the driver may touch.
    :param conf: an oslo.config ``ConfigOpts`` (the agent's ``CONF``), or
        None: the driver's own defaults.
    :param options: keyword arguments for the driver's constructor; each
        driver takes those it knows and ignores the others.
    :returns: an ``agent.driver.base.Driver``.
    :raises InvalidRequest: no driver of that name is installed.
    """
    try:
        manager = stevedore_driver.DriverManager(
            namespace=NAMESPACE, name=name, invoke_on_load=False)
    except stevedore_driver.NoMatches:
        raise exception.InvalidRequest(
            'No agent driver named %r is installed (entry point group %s)'
            % (name, NAMESPACE))
    cls = manager.driver
    kwargs = cls.conf_options(conf) if conf is not None else {}
    kwargs.update(options)
    return cls(list(image_dirs), **kwargs)
