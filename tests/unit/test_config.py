"""The sample config in etc/ is generated, never hand-edited: fail when it
no longer matches the option definitions."""

import os
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def test_sample_config_is_current(tmp_path):
    out = tmp_path / 'livesnap.conf.sample'
    gen = os.path.join(os.path.dirname(sys.executable),
                       'oslo-config-generator')
    subprocess.run([gen, '--config-file',
                    os.path.join(TOP, 'tools', 'config-generator.conf'),
                    '--output-file', str(out)], check=True, cwd=TOP,
                   capture_output=True)
    with open(os.path.join(TOP, 'etc', 'livesnap',
                           'livesnap.conf.sample')) as f:
        committed = f.read()
    assert out.read_text() == committed, (
        'etc/livesnap/livesnap.conf.sample is stale: run tools/gen-config')


def test_every_option_has_help():
    from livesnap.conf import opts
    for group, options in opts.list_opts():
        for opt in options:
            assert opt.help, '%s.%s has no help' % (group, opt.name)
