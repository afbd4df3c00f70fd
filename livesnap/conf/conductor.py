from oslo_config import cfg

conductor_group = cfg.OptGroup('conductor', title='Conductor policy options')

opts = [
    cfg.StrOpt('host', default='conductor',
               help='Name of this conductor, recorded with the operations '
                    'it starts.'),
    cfg.IntOpt('host_down_time', default=30, min=1,
               help='Seconds without a heartbeat after which an agent\'s '
                    'host is considered down; new work for it is refused '
                    'with 503.'),
    cfg.IntOpt('max_chain_depth', default=32, min=0,
               help='Most snapshot layers under a disk\'s live image; a '
                    'create that would exceed it is refused with 409. '
                    '0 means no limit.'),
    cfg.IntOpt('snapshot_quota', default=100, min=-1,
               help='Most snapshots one project may keep (logically deleted '
                    'ones do not count). -1 means no limit.'),
    cfg.FloatOpt('operation_timeout', default=600.0, min=1.0,
                 help='Seconds an agent has to report an operation before '
                      'the conductor asks it for the operation\'s state.'),
    cfg.FloatOpt('task_receipt_timeout', default=15.0, min=0.1,
                 help='Seconds after a task is sent before the conductor '
                      'asks its agent whether it has it. A task lost on '
                      'the way (a broker restart drops what its queues '
                      'hold) is sent again then, instead of after '
                      'operation_timeout; an agent that has it answers '
                      '"running" and the operation gets operation_timeout '
                      'from then on.'),
    cfg.IntOpt('max_task_attempts', default=3, min=1,
               help='Times a task that never reached its agent is sent '
                    'before the operation fails.'),
    cfg.FloatOpt('agent_call_timeout', default=10.0, min=0.1,
                 help='Seconds to wait for an agent\'s answer when the '
                      'conductor asks it about an operation.'),
    cfg.FloatOpt('periodic_interval', default=10.0, min=0.1,
                 help='Seconds between the conductor\'s periodic tasks: '
                      'finishing deferred deletions, checking overdue '
                      'operations, running due snapshot policies.'),
    cfg.IntOpt('policy_retry_window', default=900, min=0,
               help='Seconds after its slot during which a snapshot '
                    'policy\'s run that could not start for a passing '
                    'reason (host down, disk busy, database unavailable) '
                    'is tried again at every periodic tick; the policy\'s '
                    'next slot ends the window earlier. Then the run is '
                    'skipped. See docs/schedules.md.'),
    cfg.IntOpt('policy_min_interval', default=300, min=1,
               help='Fewest seconds between two runs of an interval '
                    'snapshot policy a tenant may ask for.'),
    cfg.IntOpt('policy_quota', default=10, min=-1,
               help='Most snapshot policies one project may have. -1 means '
                    'no limit.'),
    cfg.StrOpt('host_keys_dir',
               help='Directory of the agents\' host keys: one file per '
                    'host, named as the host, holding its keys in hex, one '
                    'a line (livesnap-manage host key create HOST). A '
                    'message an agent signed is accepted only if it '
                    'verifies with a key of the host it speaks for. See '
                    'docs/security.md.'),
    cfg.BoolOpt('require_host_keys', default=False,
                help='Refuse every agent message (report, progress, '
                     'heartbeat) that is not signed with its host\'s key. '
                     'Off: unsigned messages are accepted as before (with '
                     'a warning), signed ones are verified. Turn on once '
                     'every agent has its key (docs/upgrading.md).'),
    cfg.FloatOpt('host_auth_window', default=120.0, min=1.0,
                 help='Seconds a signed agent message stays acceptable '
                      'after (or before, for clock skew) its timestamp; '
                      'older ones are refused as replays, and within it '
                      'each conductor refuses a message it has seen.'),
    cfg.ListOpt('fault_points', default=[], advanced=True,
                help='Testing only: points where the conductor kills itself '
                     'with SIGKILL, to test recovery: report:apply:before '
                     '(a report received, not yet applied), '
                     'report:apply:after (applied and committed, not yet '
                     'acknowledged to the agent), api:answer:before (a '
                     'write with an Idempotency-Key recorded and sent, its '
                     'answer neither stored nor given). See docs/faults.md. '
                     'Never set in production.'),
]


def register_opts(conf):
    conf.register_group(conductor_group)
    conf.register_opts(opts, group=conductor_group)


def list_opts():
    return {conductor_group: opts}
