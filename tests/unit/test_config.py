"""The sample config in etc/ is generated, never hand-edited: fail when it
no longer matches the option definitions."""

from tests.unit import generated


def test_sample_config_is_current(tmp_path):
    generated.assert_current(tmp_path, 'oslo-config-generator',
                             'config-generator.conf', 'livesnap.conf.sample',
                             'tools/gen-config')


def test_every_option_has_help():
    from livesnap.conf import opts
    for group, options in opts.list_opts():
        for opt in options:
            assert opt.help, '%s.%s has no help' % (group, opt.name)
