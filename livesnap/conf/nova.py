from oslo_config import cfg

nova_group = cfg.OptGroup(
    'nova_notifications', title='Listening to nova',
    help='livesnap-conductor can listen to nova\'s versioned notifications '
         '(docs/nova.md): it registers the servers nova creates (by their '
         'libvirt domain), unregisters those nova deletes and logs the '
         'other changes. Each conductor with enabled = true consumes from '
         'one shared queue per pool, so every event is handled once.')

opts = [
    cfg.BoolOpt('enabled', default=False,
                help='Listen to nova\'s notifications in this conductor.'),
    cfg.StrOpt('transport_url', secret=True,
               help='The message bus nova sends its notifications to '
                    '(nova\'s [oslo_messaging_notifications] transport_url, '
                    'else its [DEFAULT] transport_url); unset, livesnap\'s '
                    'own notification transport.'),
    cfg.ListOpt('topics', default=['versioned_notifications'],
                help='Topics nova sends its versioned notifications on '
                     '(nova\'s [notifications] versioned_notifications_'
                     'topics).'),
    cfg.StrOpt('exchange', default='nova',
               help='The exchange nova sends on (its control_exchange).'),
    cfg.StrOpt('pool', default='livesnap',
               help='The listener pool: conductors of one pool share a '
                    'queue (each event goes to one of them); other '
                    'consumers of nova\'s notifications are not robbed '
                    'of theirs.'),
    cfg.StrOpt('domain_mapping', default='uuid', choices=[
        ('uuid', 'the libvirt domain\'s UUID is the instance\'s uuid (nova\'s '
                 'libvirt driver)')],
        help='How an instance maps to its libvirt domain on its host.'),
    cfg.DictOpt('host_mapping', default={},
                help='nova compute host name -> livesnap host name (the '
                     'agent\'s [DEFAULT] host), for hosts whose names '
                     'differ; by default the same name.'),
    cfg.BoolOpt('keep_snapshots', default=False,
                help='On instance.delete.end, keep the snapshot layers '
                     '(remove only the records, as DELETE /v1/servers/{id}'
                     '?keep_snapshots=true); false deletes them.'),
    cfg.IntOpt('retry_seconds', default=120, min=0,
               help='How long an unregister waits for an operation '
                    'running on the server\'s disks (409) before it gives '
                    'up with an error in the log.'),
]


def register_opts(conf):
    conf.register_group(nova_group)
    conf.register_opts(opts, group=nova_group)


def list_opts():
    return {nova_group: opts}
