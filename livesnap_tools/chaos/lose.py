"""Lose a task on its way to its agent (the chaos run's ``lose_task``
fault).

The agent of ``host`` consumes its tasks from the broker queue
``livesnap-agent.<host>``.  For at most ``window`` seconds the run
consumes from that queue too, as a second consumer (RabbitMQ hands each
message to one consumer in turn): the first task it is given (a cast of
one of :data:`TASK_METHODS`) is acknowledged and thrown away, so the
broker forgets it and the agent never sees it; anything else it is given
(the conductor's ``get_operation`` questions, ...) goes back to the queue
for the agent.  The conductor must notice (its first deadline asks the
agent, which never saw the task), send it again, and the operation must
end.
"""

import json
import time

import kombu

from livesnap import rpc

#: the agent's casts that carry a task
TASK_METHODS = ('create_snapshot', 'create_snapshots', 'delete_snapshot',
                'revert_disk', 'clone_snapshot')


def _amqp_url(transport_url):
    return 'amqp://' + transport_url.split('://', 1)[1]


def _payload(body):
    if isinstance(body, (bytes, str)):
        body = json.loads(body)
    if isinstance(body, dict) and 'oslo.message' in body:
        body = json.loads(body['oslo.message'])
    return body if isinstance(body, dict) else {}


def lose_one(transport_url, host, window):
    """Throw away the first task sent to ``host`` within ``window``
    seconds.

    :returns: ``(method, operation id)`` of the task lost, or None.
    """
    lost = []

    def on_message(body, message):
        try:
            msg = _payload(body)
        except ValueError:
            msg = {}
        task = (msg.get('args') or {}).get('task') or {}
        if not lost and msg.get('method') in TASK_METHODS:
            message.ack()
            lost.append((msg['method'], task.get('operation_id')))
        else:
            message.requeue()

    queue = kombu.Queue('%s.%s' % (rpc.AGENT_TOPIC, host), no_declare=True)
    with kombu.Connection(_amqp_url(transport_url)) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 1, False)
        with kombu.Consumer(channel, queues=[queue],
                            callbacks=[on_message], no_ack=False,
                            accept=['json', 'application/json']):
            deadline = time.monotonic() + window
            while not lost and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=min(
                        0.5, max(0.01, deadline - time.monotonic())))
                except TimeoutError:
                    pass
                except OSError:
                    if time.monotonic() >= deadline:
                        break
    return lost[0] if lost else None
