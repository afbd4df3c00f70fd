from oslo_config import cfg

libvirt_group = cfg.OptGroup(
    'libvirt', title='libvirt driver options ([agent] driver = libvirt)')

opts = [
    cfg.StrOpt('uri', default='qemu:///system',
               help='libvirt connection URI of the hypervisor whose '
                    'domains the agent snapshots.'),
    cfg.StrOpt('snapshot_pause', default='transaction',
               choices=[('transaction',
                         'one snapshotCreateXML call: libvirt runs it as a '
                         'QEMU transaction that drains the disk\'s I/O; '
                         'the vCPUs keep running'),
                        ('suspend',
                         'suspend the domain, snapshotCreateXML, resume '
                         '(the vCPUs stop too)')],
               help='How a live snapshot pauses the disk. See '
                    'docs/libvirt.md for the figures behind the default.'),
    cfg.FloatOpt('job_poll_interval', default=0.05, min=0.01,
                 advanced=True,
                 help='Seconds between polls of a merge\'s block job.'),
]


def register_opts(conf):
    conf.register_group(libvirt_group)
    conf.register_opts(opts, group=libvirt_group)


def list_opts():
    return {libvirt_group: opts}
