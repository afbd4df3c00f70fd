"""CPU time and peak memory of processes, read from ``/proc``.

The load benchmark charges CPU to kinds of process (conductor, agent, the
agents' children such as ``qemu-img``, QEMU, PostgreSQL backends, the
broker, the benchmark's own clients).  It samples ``/proc/PID/stat`` at the
start and at the end of a measuring window and subtracts; a process that
appeared in between counts from zero, one that vanished counts up to its
last sample.  No third-party package is needed.
"""

import os

CLK_TCK = os.sysconf('SC_CLK_TCK')


def cpu_times(pid):
    """``(own, children)`` CPU seconds of ``pid`` (None if unreadable).

    *own* is utime + stime; *children* is cutime + cstime, the CPU of the
    children it has waited for (for an agent: ``qemu-img``).
    """
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat = f.read()
    except (OSError, TypeError):
        return None
    # fields after the parenthesised command name: state is [0]
    rest = stat.rsplit(')', 1)[-1].split()
    try:
        utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    except (ValueError, IndexError):
        return None
    return ((utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK)


def status_kib(pid, field):
    """A ``/proc/PID/status`` field in KiB (``VmRSS``, ``VmHWM``), or None."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except (OSError, ValueError, TypeError):
        return None
    return None


def pids_by_comm(comm):
    """Pids of the processes whose ``comm`` is ``comm`` (e.g. beam.smp)."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/comm' % entry) as f:
                if f.read().strip() == comm:
                    found.append(int(entry))
        except OSError:
            continue
    return found


def sample(kinds):
    """CPU times of every pid of every kind.

    :param kinds: ``{kind: [pid, ...]}``
    :returns: ``{kind: {pid: (own, children)}}`` (unreadable pids left out)
    """
    out = {}
    for kind, pids in kinds.items():
        got = {}
        for pid in pids:
            times = cpu_times(pid)
            if times is not None:
                got[pid] = times
        out[kind] = got
    return out


def delta(before, after):
    """CPU seconds used per kind between two :func:`sample` results.

    :returns: ``{kind: own_seconds}`` plus ``{kind + '+children':
        children_seconds}`` where any child time was seen.
    """
    out = {}
    for kind in set(before) | set(after):
        a = before.get(kind, {})
        b = after.get(kind, {})
        own = children = 0.0
        for pid in set(a) | set(b):
            start = a.get(pid, (0.0, 0.0))
            end = b.get(pid, start)
            own += max(0.0, end[0] - start[0])
            children += max(0.0, end[1] - start[1])
        out[kind] = round(own, 3)
        if children:
            out[kind + '+children'] = round(children, 3)
    return out


def peak_rss(kinds):
    """Peak resident set (VmHWM) per kind: ``{kind: {'max', 'mean', 'n'}}``
    in KiB over the kind's live processes.
    """
    out = {}
    for kind, pids in kinds.items():
        vals = [v for v in (status_kib(p, 'VmHWM') for p in pids)
                if v is not None]
        out[kind] = {'n': len(vals),
                     'max': max(vals) if vals else None,
                     'mean': round(sum(vals) / len(vals)) if vals else None}
    return out
