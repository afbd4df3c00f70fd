"""What may import what (README.md, "Where things are").

- Nothing outside ``tests/`` imports ``tests``: the tools and the services
  must work from a checkout without the test tree on the path.
- The service packages (``agent``, ``conductor``, ``livesnap``) never import
  ``livesnap_tools``, which is not installed with them.
- The ``livesnap`` command loads none of the server's libraries, so the
  client can be installed without them.
- The conductor stays driver-agnostic: what it knows of a driver's
  locators is in ``livesnap.locators`` (docs/drivers.md), not in its
  modules.
- One SQLAlchemy style: the services build 2.0-style ``select()``
  statements, never ``session.query()``.
- The REST controllers (``conductor/api/controllers.py``,
  ``schedules.py``) open no database session or connection: they call
  conductor functions.
- The conductor is built in layers (:data:`CONDUCTOR_LAYERS`): records,
  the flows above them, dispatch and report handling above those, the
  entry points on top.  No import (inside a function or not) runs from a
  layer to a higher one, and no conductor modules import each other in a
  loop.
- Between the packages: the agent imports nothing of the conductor but
  its RPC client (``conductor.rpcapi``), the conductor nothing of the
  agent but its RPC client (``agent.rpcapi``), and ``livesnap`` (what both
  share) neither, except ``livesnap.allinone``, the one process that runs
  both.
- Each driver keeps its hypervisor to itself: in the services, only
  ``agent/driver/qemu/`` imports the QMP client, and only
  ``agent/driver/libvirt/`` imports libvirt-python (docs/drivers.md).
"""

import ast
import importlib.metadata
import json
import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SERVICE_PACKAGES = ('agent', 'conductor', 'livesnap')
#: what only the conductor and the agent load (and those packages)
SERVER_LIBRARIES = {'agent', 'alembic', 'conductor', 'keystonemiddleware',
                    'kombu', 'oslo_messaging', 'oslo_policy', 'qemu',
                    'routes', 'sqlalchemy', 'waitress', 'webob'}
SKIP_DIRS = {'.git', '.venv', 'build', 'dist', 'state', '__pycache__'}


def _python_files():
    for dirpath, dirnames, filenames in os.walk(TOP):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in SKIP_DIRS and not d.startswith('.')
                             and not d.endswith('.egg-info'))
        for name in sorted(filenames):
            if name.endswith('.py'):
                path = os.path.join(dirpath, name)
                yield os.path.relpath(path, TOP)


def _imported_modules(path):
    """Absolute module names a file imports, anywhere in it (also inside
    functions), with their line numbers.
    """
    with open(os.path.join(TOP, path), 'rb') as f:
        tree = ast.parse(f.read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, '%s.%s' % (node.module, alias.name)


def _top(path):
    return path.split(os.sep, 1)[0]


def test_the_walk_sees_the_tree():
    files = set(_python_files())
    assert 'livesnap/rpc.py' in files
    assert 'livesnap_tools/bench.py' in files
    assert 'tests/unit/test_layout.py' in files


def test_nothing_outside_tests_imports_tests():
    bad = ['%s:%d imports %s' % (path, line, module)
           for path in _python_files() if _top(path) != 'tests'
           for line, module in _imported_modules(path)
           if module.split('.')[0] == 'tests']
    assert bad == []


def test_services_never_import_the_tools():
    bad = ['%s:%d imports %s' % (path, line, module)
           for path in _python_files() if _top(path) in SERVICE_PACKAGES
           for line, module in _imported_modules(path)
           if module.split('.')[0] in ('livesnap_tools', 'tests')]
    assert bad == []


def _modules_imported_by(module):
    """Top-level names of the modules that importing ``module`` loads, in
    a fresh interpreter.
    """
    out = subprocess.run(
        [sys.executable, '-c',
         'import json, sys; before = set(sys.modules); import %s; '
         'print(json.dumps(sorted(set(sys.modules) - before)))' % module],
        capture_output=True, text=True, check=True, timeout=120)
    return {name.split('.')[0] for name in json.loads(out.stdout)}


def _cli_module():
    """The module behind the installed ``livesnap`` command."""
    (script,) = importlib.metadata.entry_points(group='console_scripts',
                                                name='livesnap')
    return script.module


def test_cli_loads_none_of_the_server_libraries():
    loaded = _modules_imported_by(_cli_module())
    assert sorted(loaded & SERVER_LIBRARIES) == []


def test_the_server_side_does_load_them():
    """The check above can fail: livesnap.rpc brings oslo.messaging in."""
    assert 'oslo_messaging' in _modules_imported_by('livesnap.rpc')


#: What would show a conductor module building or reading QEMU locators.
QEMU_DETAILS = ('qmp_socket', "'.qcow2'", '.qcow2"')
#: Conductor files that may name them, and why.
DRIVER_DETAILS_ALLOWED = {
    # the migration history: 0001 made servers.qmp_socket, 0002 moved it
    # into the disks' locators
    'conductor/db/migrations/',
    # the column stays (a copy for the admins' view, no migration drops
    # it); no conductor logic reads it
    'conductor/db/models.py',
    # the REST contract's field names (openapi.yaml): registration by
    # paths takes the socket, the admins' view of a server shows it
    'conductor/api/schemas.py',
    'conductor/api/views.py',
}


def _allowed(path):
    return any(path == x or (x.endswith('/') and path.startswith(x))
               for x in DRIVER_DETAILS_ALLOWED)


def test_the_conductor_builds_no_qemu_locator():
    bad = []
    for path in _python_files():
        if _top(path) != 'conductor' or _allowed(path.replace(os.sep, '/')):
            continue
        with open(os.path.join(TOP, path), encoding='utf-8') as f:
            for number, line in enumerate(f, 1):
                bad.extend('%s:%d names %s' % (path, number, what)
                           for what in QEMU_DETAILS if what in line)
    assert bad == []


def test_the_exemptions_are_real():
    """Each exempt file exists, so a rename does not widen the guard's
    hole unnoticed.
    """
    for x in DRIVER_DETAILS_ALLOWED:
        assert os.path.exists(os.path.join(TOP, x)), x


def _calls(path):
    """``(line, dotted name)`` of every call in a file whose callee is a
    name or an attribute (``db.reader``, ``s.query``).
    """
    with open(os.path.join(TOP, path), 'rb') as f:
        tree = ast.parse(f.read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                parts.append(func.id)
            yield node.lineno, '.'.join(reversed(parts))


def test_the_services_use_no_session_query():
    bad = ['%s:%d calls %s' % (path, line, name)
           for path in _python_files() if _top(path) in SERVICE_PACKAGES
           for line, name in _calls(path)
           if name.endswith('.query')]
    assert bad == []


def test_the_controllers_open_no_database_session():
    controllers = [os.path.join('conductor', 'api', name)
                   for name in ('controllers.py', 'schedules.py')]
    bad = ['%s:%d calls %s' % (path, line, name)
           for path in controllers
           for line, name in _calls(path)
           if name in ('db.transaction', 'db.reader',
                       'db.read_never_waiting')]
    bad += ['%s:%d imports %s' % (path, line, module)
            for path in controllers
            for line, module in _imported_modules(path)
            if module in ('conductor.db.reads', 'conductor.db.models')]
    assert bad == []


#: The conductor's layers, lowest first: a module (or a package, for all
#: its modules) may import only from its own layer or the ones below.
CONDUCTOR_LAYERS = [
    # records: the database, states, locks, operation records, what the
    # hosts reported
    ('records', ['conductor.db', 'conductor.exception', 'conductor.states',
                 'conductor.locking', 'conductor.operations',
                 'conductor.notifications', 'conductor.notification_samples',
                 'conductor.metrics', 'conductor.agent_versions',
                 'conductor.hosts', 'conductor.limits', 'conductor.tree',
                 'conductor.slots', 'conductor.rbac',
                 'conductor.healthcheck', 'conductor.rpcapi',
                 'conductor.idempotency', 'conductor.hostauth']),
    # flows: decide and record; they return what is to be sent
    ('flows', ['conductor.creation', 'conductor.deletion',
               'conductor.revert', 'conductor.clones', 'conductor.groups',
               'conductor.retention', 'conductor.cancellation',
               'conductor.audit', 'conductor.servers', 'conductor.actions',
               'conductor.waiting', 'conductor.unregister']),
    # dispatch and report handling, and what runs flows by itself
    ('dispatch', ['conductor.dispatch', 'conductor.reports',
                  'conductor.deadlines', 'conductor.schedule_runner',
                  'conductor.schedules']),
    # the entry points: REST API, RPC endpoints, periodic tasks, commands
    ('entry', ['conductor.api', 'conductor.manager', 'conductor.periodic',
               'conductor.service', 'conductor.status', 'conductor.manage',
               'conductor.wsgi', 'conductor.nova_listener']),
]

#: What each service package may import of the others.
PACKAGE_IMPORTS = {
    'agent': {'conductor': ['conductor.rpcapi']},
    'conductor': {'agent': ['agent.rpcapi']},
    'livesnap': {'agent': [], 'conductor': []},
}
#: ``livesnap-all-in-one`` runs the conductor and an agent in one process.
PACKAGE_IMPORT_EXEMPT = {'livesnap/allinone.py'}


def _module_name(path):
    name = os.path.splitext(path)[0].replace(os.sep, '.')
    return name[:-len('.__init__')] if name.endswith('.__init__') else name


def _under(module, prefixes):
    return any(module == p or module.startswith(p + '.') for p in prefixes)


def _layer(module):
    """The index of ``module``'s layer, or None if it is in none."""
    for index, (_, prefixes) in enumerate(CONDUCTOR_LAYERS):
        if _under(module, prefixes):
            return index
    return None


def _conductor_imports():
    """``(path, line, importer, imported)`` of every import of a conductor
    module by a conductor module.
    """
    for path in _python_files():
        if _top(path) != 'conductor':
            continue
        importer = _module_name(path)
        for line, module in _imported_modules(path):
            if module.startswith('conductor.') and module != importer:
                yield path, line, importer, module


def test_every_conductor_module_has_a_layer():
    bad = [_module_name(path) for path in _python_files()
           if _top(path) == 'conductor' and _module_name(path) != 'conductor'
           and _layer(_module_name(path)) is None]
    assert bad == [], 'add them to CONDUCTOR_LAYERS'


def test_the_conductor_imports_never_run_up_its_layers():
    bad = []
    for path, line, importer, module in _conductor_imports():
        low, high = _layer(importer), _layer(module)
        if low is not None and high is not None and high > low:
            bad.append('%s:%d (%s) imports %s (%s)' % (
                path, line, CONDUCTOR_LAYERS[low][0], module,
                CONDUCTOR_LAYERS[high][0]))
    assert bad == []


def _known(module, modules):
    """The module of ``modules`` that ``module`` names (``conductor.db.api``
    for ``conductor.db.api``; ``conductor.creation`` for an attribute of
    it); None for a package's ``__init__`` or nothing known.
    """
    while module and module not in modules:
        module = module.rpartition('.')[0]
    return module or None


def test_no_conductor_modules_import_each_other_in_a_loop():
    modules = {_module_name(p) for p in _python_files()
               if _top(p) == 'conductor'} - {'conductor'}
    graph = {m: set() for m in modules}
    for _, _, importer, module in _conductor_imports():
        target = _known(module, modules)
        if target is not None and target != importer and \
                not importer.startswith(target + '.'):
            graph[importer].add(target)
    # Tarjan's strongly connected components: a loop is one of two or more.
    index, low, stack, on_stack, loops = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert loops == []


def test_the_packages_import_each_other_only_through_rpc_clients():
    bad = []
    for path in _python_files():
        rules = PACKAGE_IMPORTS.get(_top(path))
        if rules is None or path in PACKAGE_IMPORT_EXEMPT:
            continue
        for line, module in _imported_modules(path):
            other = module.split('.')[0]
            if other in rules and module != other and \
                    not _under(module, rules[other]):
                bad.append('%s:%d imports %s' % (path, line, module))
    assert bad == []


def test_the_layout_exemptions_are_real():
    for path in PACKAGE_IMPORT_EXEMPT:
        assert os.path.exists(os.path.join(TOP, path)), path
    for _, prefixes in CONDUCTOR_LAYERS:
        for prefix in prefixes:
            assert os.path.exists(os.path.join(
                TOP, *prefix.split('.'))) or os.path.exists(os.path.join(
                    TOP, *prefix.split('.')) + '.py'), prefix


def test_the_conductor_builds_its_agent_client_in_one_place():
    """``agent_versions.client()`` pins the agent RPC client to what each
    host reported; an ``AgentAPI()`` built elsewhere would not be.
    """
    bad = ['%s:%d calls %s' % (path, line, name)
           for path in _python_files() if _top(path) == 'conductor'
           and path != os.path.join('conductor', 'agent_versions.py')
           for line, name in _calls(path)
           if name.split('.')[-1] == 'AgentAPI']
    assert bad == []


#: What only one driver's package may import in the services, by module.
DRIVER_ONLY = {
    'agent.driver.qemu.qmp': 'agent/driver/qemu/',
    'libvirt': 'agent/driver/libvirt/',
    'libvirt_qemu': 'agent/driver/libvirt/',
}


def test_each_driver_keeps_its_hypervisor_to_itself():
    bad = []
    for path in _python_files():
        if _top(path) not in SERVICE_PACKAGES:
            continue
        where = path.replace(os.sep, '/')
        for line, module in _imported_modules(path):
            home = DRIVER_ONLY.get(module)
            if home is not None and not where.startswith(home):
                bad.append('%s:%d imports %s' % (path, line, module))
    assert bad == []


def test_the_driver_rule_sees_the_drivers():
    """The rule above can fail: the drivers do import what it guards."""
    seen = {module for path in _python_files()
            if path.replace(os.sep, '/').startswith('agent/driver/')
            for _line, module in _imported_modules(path)}
    assert set(DRIVER_ONLY) <= seen
