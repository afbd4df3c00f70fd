"""What may import what (README.md, "Where things are").

- Nothing outside ``tests/`` imports ``tests``: the tools and the services
  must work from a checkout without the test tree on the path.
- The service packages (``agent``, ``conductor``, ``livesnap``) never import
  ``livesnap_tools``, which is not installed with them.
- ``livesnap.cli`` imports the standard library only, so the client runs
  from ``pip install livesnap`` without the server's dependencies.
"""

import ast
import json
import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SERVICE_PACKAGES = ('agent', 'conductor', 'livesnap')
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
    functions), with their line numbers."""
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
    assert 'livesnap/cli.py' in files
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
    a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, '-c',
         'import json, sys; before = set(sys.modules); import %s; '
         'print(json.dumps(sorted(set(sys.modules) - before)))' % module],
        capture_output=True, text=True, check=True, timeout=120)
    return {name.split('.')[0] for name in json.loads(out.stdout)}


def test_cli_imports_only_the_standard_library():
    foreign = sorted(name for name in _modules_imported_by('livesnap.cli')
                     if name not in sys.stdlib_module_names
                     and name != 'livesnap')
    assert foreign == []


def test_the_server_side_does_need_its_dependencies():
    """The check above can fail: livesnap.rpc brings oslo.messaging in."""
    assert 'oslo_messaging' in _modules_imported_by('livesnap.rpc')
