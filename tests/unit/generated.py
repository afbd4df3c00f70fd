"""Check that a generated file in etc/ matches its generator's output."""

import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def assert_current(tmp_path, generator, config, committed, regenerate):
    """Run ``generator --config-file tools/CONFIG`` and compare its output
    with the committed ``etc/livesnap/COMMITTED``.
    """
    out = tmp_path / committed
    subprocess.run([os.path.join(os.path.dirname(sys.executable), generator),
                    '--config-file', os.path.join(TOP, 'tools', config),
                    '--output-file', str(out)],
                   check=True, cwd=TOP, capture_output=True,
                   # This tree's code, not the one installed (editable).
                   env=dict(os.environ, PYTHONPATH=TOP))
    with open(os.path.join(TOP, 'etc', 'livesnap', committed)) as f:
        assert out.read_text() == f.read(), (
            'etc/livesnap/%s is stale: run %s' % (committed, regenerate))
