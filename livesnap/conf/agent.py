import socket

from oslo_config import cfg

agent_group = cfg.OptGroup('agent', title='Hypervisor host agent options')

opts = [
    cfg.StrOpt('host', default=socket.gethostname(),
               sample_default='<hostname>',
               help='Name of this hypervisor host; the conductor sends the '
                    'host\'s tasks to it. Must match the "host" of the '
                    'servers registered for it.'),
    cfg.StrOpt('host_key_file',
               help='File holding this host\'s secret key (hex, made by '
                    'livesnap-manage host key create HOST). When set, '
                    'every message to the conductors is signed with it, so '
                    'they can tell it comes from this host '
                    '(docs/security.md). Readable by the agent only.'),
    cfg.StrOpt('driver', default='qemu',
               help='The hypervisor driver: the name of an entry point of '
                    'the livesnap.agent.drivers group. "qemu": VMs whose '
                    'QEMU livesnap reaches on a QMP socket of its own '
                    '(qcow2 images, qemu-img offline); "fake": in memory, '
                    'for tests only.'),
    cfg.ListOpt('image_dirs', default=['/var/lib/livesnap/images'],
                help='Directories holding VM disk images. The agent '
                     'refuses any path outside them.'),
    cfg.StrOpt('journal_dir', default='$state_path/journal',
               help='Directory of the agent\'s operation journal.'),
    cfg.FloatOpt('heartbeat_interval', default=5.0, min=0.1,
                 help='Seconds between heartbeats sent to the conductor.'),
    cfg.FloatOpt('pause_deadline', default=0.5, min=0.0,
                 help='Longest time in seconds the agent waits for QEMU to '
                      'answer a paused section (stop, the graph change and '
                      'cont, sent in one write). Past it the operation fails '
                      'with pause_deadline_exceeded unless the graph change '
                      'is found done; the agent still waits up to '
                      'qmp_timeout for the queued cont, then resumes the VM '
                      'over a new connection. With the libvirt driver, a '
                      'watchdog resumes a domain the agent suspended once '
                      'the pause outlives it (libvirt runs that resume '
                      'after any job it still holds on the domain).'),
    cfg.FloatOpt('quiesce_timeout', default=10.0, min=0.1,
                 help='Longest time in seconds the guest agent (qemu-ga) '
                      'has to freeze the guest\'s filesystems before a '
                      'snapshot\'s pause. Past it the guest is thawed and '
                      'the snapshot fails (quiesce=required) or goes on '
                      'crash-consistent (quiesce=preferred).'),
    cfg.FloatOpt('thaw_retry_timeout', default=300.0, min=0.0,
                 help='Seconds the agent keeps retrying a guest-fsfreeze-'
                      'thaw that failed (after 1 s, then twice as long each '
                      'time), until the guest is thawed. Past it the journal '
                      'keeps the guest marked frozen and the agent thaws it '
                      'when it starts again.'),
    cfg.IntOpt('resume_retries', default=5, min=1,
               help='Attempts to resume a paused VM before giving up.'),
    cfg.FloatOpt('qmp_timeout', default=5.0, min=0.1,
                 help='Timeout in seconds for one QMP command.'),
    cfg.IntOpt('reserved_space_mb', default=64, min=0,
               help='Free space in MiB an image directory keeps: a create '
                    'or merge that would leave less (a merge needs room '
                    'for the data it copies) is refused with error '
                    '"no_space" before it starts.'),
    cfg.IntOpt('merge_rate_limit_mb', default=0, min=0,
               help='MiB per second a merge\'s block job may copy while the '
                    'VM runs (0: no limit); spares the host\'s storage '
                    'for the VMs\' own I/O.'),
    cfg.FloatOpt('merge_timeout', default=3600.0, min=1.0,
                 help='Longest time in seconds a merge\'s block job may '
                      'copy; a job that overruns it is cancelled and the '
                      'operation fails, leaving the images as they were.'),
    cfg.FloatOpt('progress_interval', default=1.0, min=0.0,
                 help='Seconds between two progress messages of a long '
                      'copy (a merge, a clone) to the conductor; a copy '
                      'that ends sooner sends none, its report says 100 '
                      '(0: every poll of the job sends one).'),
    cfg.FloatOpt('report_resend_interval', default=5.0, min=0.1,
                 help='Seconds an operation\'s report waits for the '
                      'conductor\'s acknowledgement before the agent sends '
                      'it again; each further re-send waits twice as long, '
                      'up to 60 seconds. Unacknowledged reports are also '
                      'sent again when the agent starts.'),
    cfg.FloatOpt('journal_retention', default=86400.0, min=0.0,
                 help='Seconds an acknowledged or abandoned journal entry '
                      'is kept (in the journal\'s acked/ archive) to answer '
                      'a late duplicate of its task; then it is removed. '
                      'Keep it well above [conductor] operation_timeout.'),
    cfg.ListOpt('fault_points', default=[], advanced=True,
                help='Testing only: points ACTION:STEP:WHEN (WHEN is before '
                     'or after) where the agent kills itself with SIGKILL, '
                     'to test recovery; ACTION:STEP:WHEN:SECONDS holds the '
                     'operation there that many seconds instead. See '
                     'docs/faults.md. Never set in production.'),
]


def register_opts(conf):
    conf.register_group(agent_group)
    conf.register_opts(opts, group=agent_group)


def list_opts():
    return {agent_group: opts}
