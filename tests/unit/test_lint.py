"""The code passes flake8 with OpenStack's hacking rules.

Every OpenStack project runs this linter; here it is part of the test
command, so ``./tools/test`` and CI fail on what it reports.  What is
checked, and which codes are ignored and why, is in ``tox.ini``'s
``[flake8]`` section; ``.venv/bin/flake8 <files>`` runs the same check by
hand.
"""

import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _flake8(*args):
    return subprocess.run(
        [sys.executable, '-m', 'flake8'] + list(args), cwd=TOP,
        capture_output=True, text=True, timeout=600)


def test_hacking_is_loaded():
    """Without the hacking plugin flake8 would pass with its H rules unrun.

    The plugin comes with the test extras (``pip install -e .[test]``,
    which ``./tools/ensure-env`` runs).
    """
    result = _flake8('--version')
    assert result.returncode == 0, result.stderr
    assert 'hacking' in result.stdout, (
        'flake8 runs without the hacking plugin: %s' % result.stdout)


def test_flake8_reports_nothing():
    """flake8 over the whole tree (tox.ini says what it excludes)."""
    result = _flake8()
    assert result.returncode == 0 and not result.stdout, (
        'flake8 (configured in tox.ini) reports:\n%s%s'
        % (result.stdout, result.stderr))
