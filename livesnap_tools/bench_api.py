"""The ``api`` section of the benchmark: what one REST request costs.

A real ``livesnap-conductor`` and ``livesnap-agent`` run as processes over
RabbitMQ (a private vhost) with PostgreSQL (SQLite if PostgreSQL is not
reachable), as in production.  Then, for a few seconds each, C clients
(threads of this process, one keep-alive HTTP connection each) send:

``GET /v1/operations/{id}``
    the request every tenant polls;
``GET /v1/servers/{id}/snapshots``
    a tree of a few snapshots;
``POST /v1/servers/{id}/snapshots``
    each client on a server of its own (offline disks, so the agent only
    runs ``qemu-img``): POST, then poll the operation until it ends
    (polls not counted), again.  The POST's latency is the API's cost; the
    rate is bounded by the whole pipeline, agent included.

For each it prints requests per second, mean and p99 latency, errors
(connection resets, 5xx) and the conductor's CPU time per request (from
``/proc/PID/stat``, so it includes the RPC server and periodic tasks,
which are idle here).  The client shares the machine's cores with the
conductor: on 2 cores, req/s is a floor.
"""

import http.client
import json
import os
import threading
import time

from livesnap_tools import bench

#: Token of the project that owns the benchmark's servers.
TOKEN = 'p1-token'


def _cpu_seconds(pid):
    """utime + stime of ``pid`` in seconds (None if it is gone)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


class _Client(object):
    """One keep-alive HTTP connection; reconnects after an error."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.conn = None

    def request(self, method, path, body=None):
        """:returns: (status, parsed JSON body); raises OSError and
            http.client errors after dropping the connection.
        """
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port,
                                                   timeout=30)
        headers = {'X-Auth-Token': TOKEN}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers['Content-Type'] = 'application/json'
        try:
            self.conn.request(method, path, data, headers)
            resp = self.conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if resp.will_close:
            self.close()
        return resp.status, (json.loads(payload) if payload else None)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run_clients(port, clients, seconds, work, host='127.0.0.1'):
    """Run ``work(index, client, record)`` in ``clients`` threads until
    ``seconds`` have passed; ``record(method, path, body)`` sends one timed
    request and returns (status, body) or None after a connection error.

    :returns: dict with n, seconds, req_s, mean_ms, p50_ms, p99_ms,
        errors (connection errors and 5xx) and statuses.
    """
    lock = threading.Lock()
    lat, statuses = [], {}
    errors = [0]
    deadline = time.monotonic() + seconds
    start = threading.Barrier(clients + 1)

    def thread(index):
        client = _Client(host, port)

        def record(method, path, body=None):
            t0 = time.perf_counter()
            try:
                status, payload = client.request(method, path, body)
            except (OSError, http.client.HTTPException):
                with lock:
                    errors[0] += 1
                return None
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                statuses[status] = statuses.get(status, 0) + 1
                if status >= 500:
                    errors[0] += 1
            return status, payload

        start.wait()
        try:
            while time.monotonic() < deadline:
                work(index, client, record)
        finally:
            client.close()

    threads = [threading.Thread(target=thread, args=(i,), daemon=True)
               for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    return {'n': len(lat), 'seconds': round(elapsed, 2),
            'req_s': round(len(lat) / elapsed, 1) if elapsed else None,
            'mean_ms': bench._ms(sum(lat) / len(lat)) if lat else None,
            'p50_ms': bench._ms(bench.percentile(lat, 50)) if lat else None,
            'p99_ms': bench._ms(bench.percentile(lat, 99)) if lat else None,
            'errors': errors[0],
            'statuses': {str(k): v for k, v in sorted(statuses.items())}}


def _measure(dep, pid, name, clients, seconds, work):
    cpu0 = _cpu_seconds(pid)
    row = run_clients(dep.port, clients, seconds, work)
    cpu1 = _cpu_seconds(pid)
    row['request'] = name
    row['clients'] = clients
    if cpu0 is not None and cpu1 is not None and row['n']:
        row['cpu_ms_per_req'] = round((cpu1 - cpu0) * 1000.0 / row['n'], 3)
    else:
        row['cpu_ms_per_req'] = None
    return row


def _deployment(result):
    """Conductor and agent processes (see ``bench.process_deployment``)."""
    return bench.process_deployment(result)


#: Seconds between the untimed polls of a POST's operation: slow enough
#: that the polls do not dominate the POST row's CPU per request.
POLL_INTERVAL = 0.05


def _wait(client, op_id, timeout=60):
    """Poll an operation (untimed) until it ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body = client.request(
                'GET', '/v1/operations/%s' % op_id)
        except (OSError, http.client.HTTPException):
            time.sleep(0.05)
            continue
        if status == 200 and body['operation']['status'] in ('succeeded',
                                                             'failed'):
            return body['operation']
        time.sleep(POLL_INTERVAL)
    raise RuntimeError('operation %s did not end' % op_id)


def run(opts):
    """The ``api`` section (see the module docstring)."""
    from agent import images
    result = {'skipped': None, 'notes': [], 'rows': []}
    dep = _deployment(result)
    if dep is None:
        return result
    clients, seconds = opts.api_clients, opts.api_seconds
    try:
        dep.start()
        pid = dep.procs['conductor'].pid
        servers = []
        for i in range(clients):
            base = os.path.join(dep.image_dir, 'api%d-vda.qcow2' % i)
            images.create_base(base, 64 * bench.MiB)
            dep.register_server('api%d' % i, base)
            servers.append('api%d' % i)
        op_id = None
        for i in range(5):
            body = dep.ok('POST', '/v1/servers/api0/snapshots',
                          {'snapshot': {'name': 's%d' % i, 'disk': 'vda'}},
                          status=202)
            op_id = body['operation']['id']
            dep.wait_operation(op_id)
        time.sleep(opts.settle)

        def get_op(index, client, record):
            record('GET', '/v1/operations/%s' % op_id)

        def get_tree(index, client, record):
            record('GET', '/v1/servers/api0/snapshots')

        def post(index, client, record):
            got = record('POST', '/v1/servers/%s/snapshots' % servers[index],
                         {'snapshot': {'name': 'b', 'disk': 'vda'}})
            if got and got[0] == 202:
                _wait(client, got[1]['operation']['id'])

        result['rows'].append(_measure(
            dep, pid, 'GET /v1/operations/{id}', clients, seconds, get_op))
        result['rows'].append(_measure(
            dep, pid, 'GET /v1/servers/{id}/snapshots (5)', clients,
            seconds, get_tree))
        result['rows'].append(_measure(
            dep, pid, 'POST /v1/servers/{id}/snapshots', clients, seconds,
            post))
        result['rows'][-1]['notes'] = 'each client then polls its operation'
    except Exception:
        for proc in ('conductor', 'agent'):
            print('--- %s log ---\n%s' % (proc, dep.log(proc)),
                  file=bench.sys.stderr)
        raise
    finally:
        dep.stop()
    result['notes'].append(
        '%d clients, one keep-alive connection each, %s s per request '
        'kind; threads of the benchmark process, on the same cores as the '
        'conductor.' % (clients, seconds))
    result['notes'].append(
        'cpu/req = the conductor process\'s CPU time (user + system) '
        'during the run / requests answered; for POST it includes the '
        'handling of the agent\'s report of each operation and the '
        'untimed polls (every %d ms) until it ends.'
        % (POLL_INTERVAL * 1000))
    return result


def render(sec):
    """Lines of the section's table."""
    out = ['7. REST API requests (one conductor process, %s)'
           % sec.get('database', '?')]
    if sec.get('skipped'):
        return out + ['  skipped: ' + sec['skipped'], '']
    out += bench._table(
        ['request', 'clients', 'n', 'req/s', 'mean ms', 'p99 ms',
         'errors', 'cpu ms/req'],
        [[r['request'], r['clients'], r['n'], bench._f(r['req_s']),
          bench._f(r['mean_ms'], 2), bench._f(r['p99_ms'], 2),
          r['errors'], bench._f(r['cpu_ms_per_req'], 2)]
         for r in sec['rows']])
    out += ['  * ' + n for n in sec['notes']] + ['']
    return out
