"""Helpers behind ``tools/boot-vm`` and ``tools/run`` (the demo deployment).

``python -m livesnap_tools.demo boot-vm ...``
    Boot a disk-only QEMU test VM (:class:`livesnap_tools.testvm.TestVM`) on a
    fresh qcow2 disk and register it through the REST API as admin; or stop,
    start again (on the disk's *current* active image, read from the API) or
    write data through a running one.  See ``tools/boot-vm --help``.

``python -m livesnap_tools.demo wait-ready --config-file FILE``
    Wait until the API of a deployment answers and its agent has sent a
    heartbeat (so that snapshot requests are not refused with 503).

Defaults can come from a livesnap config file (``--config-file``): the image
directory (first of ``[agent] image_dirs``), the host (``[agent] host``), the
API URL (``[api] host_ip``/``port``), an admin token (from ``[api]
token_file``) and the run directory (``$state_path/run``).
"""

import argparse
import configparser
import json
import os
import re
import signal
import socket
import sys
import time

from livesnapclient import client as lsclient
from livesnapclient import exceptions as lsexc

MiB = 1024 * 1024
GiB = 1024 * MiB
DEFAULT_SIZE = GiB
DEFAULT_URL = "http://127.0.0.1:8780"
DEFAULT_IMAGE_DIR = "/var/lib/livesnap/images"
DEFAULT_RUN_DIR = "/run/livesnap"
DISK = "vda"
#: what ``tools/run`` writes by default (``./state`` of the repository)
DEFAULT_CONFIG_FILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "state", "livesnap.conf")

_UNITS = {"": 1, "B": 1, "K": 1024, "M": MiB, "G": GiB, "T": 1024 * GiB}


class DemoError(Exception):
    """A failure reported on stderr with exit status 1."""


def parse_size(text):
    """``1G``, ``64M``, ``4k``, ``512``, ``0x1000`` -> bytes."""
    text = str(text).strip()
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
        return int(text, 16)
    m = re.fullmatch(r"(\d+)\s*([kKmMgGtTbB]?)(?:i?[bB])?", text)
    if not m:
        raise argparse.ArgumentTypeError("not a size: %r" % text)
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def parse_pattern(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("not a byte: %r" % text)
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError("pattern must be 0..255: %r" % text)
    return value


def say(msg):
    print("boot-vm: %s" % msg, flush=True)


# ------------------------------------------------------------- config file

def read_config(path):
    """The settings boot-vm needs from a livesnap config file."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    if not parser.read(path):
        raise DemoError("cannot read config file %s" % path)

    def get(section, key, default=None):
        if parser.has_option(section, key):
            return parser.get(section, key).strip()
        return default

    state_path = get("DEFAULT", "state_path", "/var/lib/livesnap")

    def expand(value):
        if value is None:
            return None
        return value.replace("${state_path}", state_path).replace(
            "$state_path", state_path)

    image_dirs = expand(get("agent", "image_dirs"))
    host_ip = get("api", "host_ip", "127.0.0.1")
    if host_ip in ("0.0.0.0", "::", ""):
        host_ip = "127.0.0.1"
    if ":" in host_ip:
        host_ip = "[%s]" % host_ip
    result = {
        "state_path": state_path,
        "image_dir": image_dirs.split(",")[0].strip() if image_dirs else None,
        "host": get("agent", "host"),
        "url": "http://%s:%s" % (host_ip, get("api", "port", "8780")),
        "token_file": expand(get("api", "token_file")),
        "run_dir": os.path.join(state_path, "run"),
    }
    return result


def admin_token_from(token_file):
    """The first token with the admin role in a token file, or None."""
    try:
        with open(token_file) as f:
            tokens = json.load(f)
    except (OSError, ValueError):
        return None
    for token, info in tokens.items():
        if "admin" in (info.get("roles") or []):
            return token
    return None


# ------------------------------------------------------------- REST API

class API(lsclient.Client):
    """The CLI's REST client, reporting failures as boot-vm's errors.

    :param url: base URL of the API.
    :param token: admin token sent as ``X-Auth-Token``.
    :param timeout: socket timeout of each request, in seconds.
    """

    def __init__(self, url, token, timeout=lsclient.REQUEST_TIMEOUT):
        super().__init__(lsclient.fixed_endpoint_session(url, token,
                                                         timeout),
                         endpoint_override=url)

    def get_server(self, server_id):
        """The server record, or None if it is not registered."""
        try:
            return super().get_server(server_id)
        except lsexc.ApiError as exc:
            if exc.status == 404:
                return None
            raise DemoError("GET server %s: %s" % (server_id, exc))
        except lsexc.ClientError as exc:
            raise DemoError(_reason(exc))

    def register(self, server):
        try:
            return self.create_server(server)
        except lsexc.ClientError as exc:
            raise DemoError("registering server %s failed: %s"
                            % (server["id"], _reason(exc)))


def _reason(exc):
    """The CLI's error text without its own ``Error: `` prefix."""
    text = str(exc)
    return text[len("Error: "):] if text.startswith("Error: ") else text


# ------------------------------------------------------------- VMs

def _testvm():
    from livesnap_tools import testvm
    return testvm


def _pid_from(pidfile):
    try:
        with open(pidfile) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _qemu_pid_alive(pid):
    """True if ``pid`` is a live QEMU process."""
    if pid is None or not _testvm()._pid_alive(pid):
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"qemu" in f.read()
    except OSError:
        return False


def vm_running(qmp_socket):
    """The pid of the QEMU serving ``qmp_socket`` (or True if it answers
    without a pidfile), else None.
    """
    from agent.driver.qemu import qmp
    pid = _pid_from(qmp_socket + ".pid")
    if qmp.is_running(qmp_socket, timeout=5.0):
        return pid if pid is not None else True
    return None


def boot(image, qmp_socket, name):
    """Start QEMU on ``image``; clear a stale socket or a hung QEMU first."""
    testvm = _testvm()
    if len(qmp_socket.encode()) > testvm.MAX_SOCKET_PATH:
        raise DemoError("QMP socket path is longer than %d bytes: %s "
                        "(use a shorter --run-dir)"
                        % (testvm.MAX_SOCKET_PATH, qmp_socket))
    os.makedirs(os.path.dirname(qmp_socket), exist_ok=True)
    pid = _pid_from(qmp_socket + ".pid")
    if _qemu_pid_alive(pid):
        # A QEMU that does not answer QMP any more: get rid of it.
        say("killing unresponsive QEMU pid %d on %s" % (pid, qmp_socket))
        vm = testvm.TestVM(image, qmp_socket, name=name)
        vm.pid = pid
        vm.kill()
    vm = testvm.TestVM(image, qmp_socket, name=name, timeout=60.0)
    try:
        vm.start()
    except testvm.TestVMError as exc:
        raise DemoError(str(exc))
    say("QEMU %s running: pid %d, QMP socket %s, disk %s on %s"
        % (name, vm.pid, qmp_socket, DISK, image))
    return vm


def shutdown(qmp_socket, name):
    """Quit the QEMU on ``qmp_socket``.  True if one was running."""
    testvm = _testvm()
    pid = _pid_from(qmp_socket + ".pid")
    answers = vm_running(qmp_socket) is not None
    alive = _qemu_pid_alive(pid)
    if not answers and not alive:
        for stale in (qmp_socket, qmp_socket + ".pid"):
            if os.path.lexists(stale):
                os.unlink(stale)
        return False
    vm = testvm.TestVM("/dev/null", qmp_socket, name=name, timeout=30.0)
    vm.pid = pid if alive else None
    if vm.pid is None:
        # Answers QMP but we do not know its pid: quit it over QMP.
        try:
            vm.qmp("quit")
        except Exception:  # noqa: BLE001 - it may close the socket first
            pass
        deadline = time.monotonic() + 30
        while vm_running(qmp_socket) is not None:
            if time.monotonic() > deadline:
                raise DemoError("QEMU on %s did not quit" % qmp_socket)
            time.sleep(0.2)
        vm._cleanup()
    else:
        vm.shutdown()
    say("QEMU %s stopped%s (QMP socket %s); the server is now shut off"
        % (name, " (pid %d)" % pid if alive else "", qmp_socket))
    return True


# ------------------------------------------------------------- boot-vm

class Settings(object):
    """Resolved boot-vm options."""

    def __init__(self, args):
        conf = read_config(args.config_file) if args.config_file else {}
        self.name = args.name
        self.server_id = args.id or args.name
        self.project = args.project
        self.host = args.host or conf.get("host") or socket.gethostname()
        self.image_dir = os.path.abspath(
            args.image_dir or conf.get("image_dir") or DEFAULT_IMAGE_DIR)
        self.run_dir = os.path.abspath(
            args.run_dir or conf.get("run_dir") or DEFAULT_RUN_DIR)
        self.size = args.size
        self.url = (args.url or os.environ.get("LIVESNAP_URL")
                    or conf.get("url") or DEFAULT_URL)
        token = args.token or os.environ.get("LIVESNAP_ADMIN_TOKEN")
        if not token and conf.get("token_file"):
            token = admin_token_from(conf["token_file"])
        self.token = token
        self.register = not args.no_register
        self.api = API(self.url, self.token)

    @property
    def default_socket(self):
        return os.path.join(self.run_dir, "%s.qmp" % self.name)

    @property
    def default_image(self):
        return os.path.join(self.image_dir, "%s-%s.qcow2" % (self.name, DISK))

    def need_token(self):
        if not self.token:
            raise DemoError("no admin token: pass --token, set "
                            "LIVESNAP_ADMIN_TOKEN or --config-file")

    def registered(self):
        """The registered server, or None (or when not using the API)."""
        if not self.register:
            return None
        self.need_token()
        return self.api.get_server(self.server_id)

    def registered_socket(self, quiet=False):
        """QMP socket as registered (API), else the run dir's default."""
        if self.register and self.token:
            try:
                server = self.api.get_server(self.server_id)
            except DemoError:
                if not quiet:
                    raise
                server = None
            if server and server.get("qmp_socket"):
                return server["qmp_socket"]
        return self.default_socket


def do_boot(st):
    """Boot a fresh VM and register it; if already registered, boot it on
    its current active image (like --start).
    """
    server = st.registered()
    if server is not None:
        say("server %s is already registered (project %s, host %s)"
            % (st.server_id, server["project_id"], server["host"]))
        return do_start(st, server)
    from agent import images
    image = st.default_image
    os.makedirs(st.image_dir, exist_ok=True)
    if os.path.exists(image) and _is_backing(image, st.image_dir):
        # Left by another database's snapshots: writing into it would
        # corrupt them, so start on a fresh disk under a new name.
        image = os.path.join(st.image_dir, "%s-%s-%d.qcow2"
                             % (st.name, DISK, int(time.time())))
        say("%s backs other images (snapshots not known to this "
            "deployment); using a fresh disk" % st.default_image)
    if os.path.exists(image):
        say("reusing existing disk image %s" % image)
    else:
        images.create_base(image, st.size)
        say("created qcow2 disk %s (%s virtual)" % (image, _human(st.size)))
    sock = st.default_socket
    vm = None
    if vm_running(sock) is not None:
        say("QEMU %s already runs on %s" % (st.name, sock))
    else:
        vm = boot(image, sock, st.name)
    if not st.register:
        say("not registered (--no-register)")
        return 0
    try:
        server = st.api.register({
            "id": st.server_id, "name": st.name, "project_id": st.project,
            "host": st.host, "qmp_socket": sock,
            "disks": [{"name": DISK, "path": image}]})
    except DemoError:
        if vm is not None:
            vm.shutdown()
            say("QEMU %s stopped again: registration failed" % st.name)
        raise
    say("registered server %s (project %s, host %s, disk %s -> %s) at %s"
        % (server["id"], server["project_id"], server["host"], DISK, image,
           st.url))
    return 0


def _is_backing(image, image_dir):
    """True if some qcow2 file in ``image_dir`` has ``image`` as backing."""
    from agent import images
    target = os.path.realpath(image)
    for entry in os.listdir(image_dir):
        path = os.path.join(image_dir, entry)
        if not entry.endswith(".qcow2") or os.path.realpath(path) == target:
            continue
        try:
            backing = images.backing_file(path)
        except Exception:  # noqa: BLE001 - unreadable: not ours to judge
            continue
        if backing and os.path.realpath(
                os.path.join(image_dir, backing)) == target:
            return True
    return False


def do_start(st, server=None):
    """Boot QEMU again on the disk's current active image."""
    if not st.register:
        image, sock = st.default_image, st.default_socket
        say("--no-register: starting on %s" % image)
    else:
        server = server or st.registered()
        if server is None:
            raise DemoError("server %s is not registered at %s"
                            % (st.server_id, st.url))
        disks = server.get("disks") or []
        if not disks:
            raise DemoError("server %s has no disk" % st.server_id)
        image = disks[0]["active_image"]
        sock = server.get("qmp_socket") or st.default_socket
        if disks[0].get("busy"):
            say("warning: disk %s is busy with an operation"
                % disks[0]["name"])
    if not os.path.exists(image):
        raise DemoError("active image %s does not exist" % image)
    if vm_running(sock) is not None:
        say("QEMU %s already runs on %s; not starting another"
            % (st.name, sock))
        return 0
    boot(image, sock, st.name)
    return 0


def do_stop(st):
    sock = st.registered_socket(quiet=True)
    sockets = [sock] + ([st.default_socket] if st.default_socket != sock
                        else [])
    stopped = False
    for s in sockets:
        stopped = shutdown(s, st.name) or stopped
    if not stopped:
        say("QEMU %s is not running (QMP socket %s)" % (st.name, sock))
    return 0


def do_write(st, pattern, offset, length):
    testvm = _testvm()
    sock = st.registered_socket(quiet=True)
    if vm_running(sock) is None:
        raise DemoError("QEMU %s is not running (QMP socket %s)"
                        % (st.name, sock))
    vm = testvm.TestVM("/dev/null", sock, name=st.name, timeout=30.0)
    try:
        node = vm.top_node()
        image = vm.top_image()
        vm.write(pattern, offset, length, node=node)
        vm.flush(node=node)
    except testvm.TestVMError as exc:
        raise DemoError(str(exc))
    say("wrote %s of byte 0x%02x at offset %d into %s (node %s, image %s)"
        % (_human(length), pattern, offset, st.name, node, image))
    return 0


def _human(size):
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return "%d %s" % (size // factor, unit)
    return "%d bytes" % size


def boot_vm_parser():
    p = argparse.ArgumentParser(
        prog="tools/boot-vm",
        description="Boot a disk-only QEMU test VM (-M none) on a fresh "
                    "qcow2 disk and register it with livesnap as admin; "
                    "or stop / start / write to it.",
        epilog="Examples:\n"
               "  tools/boot-vm --config-file state/livesnap.conf "
               "--name vm1 --project demo\n"
               "  tools/boot-vm --config-file state/livesnap.conf "
               "--write vm1 0xaa 0 1M\n"
               "  tools/boot-vm --config-file state/livesnap.conf "
               "--stop vm1     # shut off (revert needs this)\n"
               "  tools/boot-vm --config-file state/livesnap.conf "
               "--start vm1    # boot on the current active image\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--stop", metavar="NAME",
                      help="quit the QEMU of server NAME (shuts it off)")
    mode.add_argument("--start", metavar="NAME",
                      help="boot server NAME again on its disk's current "
                           "active image (read from the API)")
    mode.add_argument("--write", nargs=4,
                      metavar=("NAME", "PATTERN", "OFFSET", "LENGTH"),
                      help="write LENGTH bytes of byte PATTERN (e.g. 0xaa) "
                           "at OFFSET through the running QEMU of NAME "
                           "(sizes like 4K, 1M), then flush")
    p.add_argument("--name", default="demo",
                   help="server name (default demo)")
    p.add_argument("--id", help="server id (default: the name)")
    p.add_argument("--project", default="demo",
                   help="project owning the server (default demo)")
    p.add_argument("--host", help="hypervisor host, must match the agent's "
                                  "[agent] host (default: from "
                                  "--config-file, else this machine's "
                                  "hostname)")
    p.add_argument("--config-file", metavar="FILE",
                   help="livesnap config file to take defaults from: "
                        "image dir, host, API URL, admin token, run dir "
                        "(env LIVESNAP_CONFIG_FILE; default %s if it "
                        "exists, as written by tools/run)"
                        % DEFAULT_CONFIG_FILE)
    p.add_argument("--image-dir", help="where the disk image goes (default: "
                   "first [agent] image_dirs of --config-file, else %s)"
                   % DEFAULT_IMAGE_DIR)
    p.add_argument("--run-dir", help="QMP sockets and pidfiles (default: "
                   "$state_path/run of --config-file, else %s)"
                   % DEFAULT_RUN_DIR)
    p.add_argument("--size", type=parse_size, default=DEFAULT_SIZE,
                   help="virtual disk size, e.g. 1G, 64M (default 1G)")
    p.add_argument("--url", help="livesnap API URL (env LIVESNAP_URL; "
                                 "default from --config-file, else %s)"
                   % DEFAULT_URL)
    p.add_argument("--token", help="admin token (env LIVESNAP_ADMIN_TOKEN; "
                                   "default: the admin token of the "
                                   "--config-file's token file)")
    p.add_argument("--no-register", action="store_true",
                   help="do not talk to the API: boot only")
    return p


def boot_vm_main(argv):
    args = boot_vm_parser().parse_args(argv)
    if args.stop:
        args.name = args.stop
    elif args.start:
        args.name = args.start
    elif args.write:
        args.name = args.write[0]
    if not args.config_file:
        args.config_file = os.environ.get("LIVESNAP_CONFIG_FILE")
    if not args.config_file and os.path.exists(DEFAULT_CONFIG_FILE):
        # The deployment tools/run made in the repository's ./state.
        args.config_file = DEFAULT_CONFIG_FILE
    st = Settings(args)
    if args.stop:
        return do_stop(st)
    if args.start:
        return do_start(st)
    if args.write:
        try:
            pattern = parse_pattern(args.write[1])
            offset = parse_size(args.write[2])
            length = parse_size(args.write[3])
        except argparse.ArgumentTypeError as exc:
            raise DemoError(str(exc))
        return do_write(st, pattern, offset, length)
    return do_boot(st)


# ------------------------------------------------------------- libvirt

#: the libvirt name of the demo's domain (``tools/run --driver libvirt``)
DOMAIN_PREFIX = "livesnap-"


def domain_main(argv):
    """Boot the demo VM as a libvirt domain and register it by domain
    (``tools/run --driver libvirt``), or ``--stop``: destroy and undefine
    it.  libvirtd is started if it does not run (and left running).
    """
    import uuid as uuidlib
    p = argparse.ArgumentParser(prog="livesnap_tools.demo domain")
    p.add_argument("--config-file", required=True)
    p.add_argument("--name", default="demo")
    p.add_argument("--project", default="demo")
    p.add_argument("--host")
    p.add_argument("--size", type=parse_size, default=DEFAULT_SIZE)
    p.add_argument("--stop", action="store_true")
    args = p.parse_args(argv)
    conf = read_config(args.config_file)
    from livesnap_tools import libvirtd
    reason = libvirtd.why_unavailable()
    if reason:
        raise DemoError("libvirt is not available: %s" % reason)
    libvirtd.ensure_running()
    import libvirt
    # Not found is an answer here, not an error to print.
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    conn = libvirt.open(libvirtd.URI)
    dom_name = DOMAIN_PREFIX + args.name
    try:
        dom = conn.lookupByName(dom_name)
    except libvirt.libvirtError:
        dom = None
    if args.stop:
        if dom is not None:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
            say("domain %s destroyed and undefined" % dom_name)
        return 0
    if dom is None:
        from agent import images
        image = os.path.join(conf["image_dir"], "%s-%s.qcow2"
                             % (args.name, DISK))
        if not os.path.exists(image):
            images.create_base(image, args.size)
            say("created qcow2 disk %s (%s virtual)"
                % (image, _human(args.size)))
        dom = conn.defineXML(libvirtd.domain_xml(
            dom_name, str(uuidlib.uuid4()), [(DISK, image)]))
        say("defined libvirt domain %s (TCG) on %s" % (dom_name, image))
    if not dom.isActive():
        dom.create()
    say("domain %s running (uuid %s)" % (dom_name, dom.UUIDString()))
    api = API(conf["url"], admin_token_from(conf["token_file"] or ""))
    if api.get_server(args.name) is not None:
        say("server %s is already registered" % args.name)
        return 0
    server = api.register({
        "id": args.name, "name": args.name, "project_id": args.project,
        "host": args.host or conf["host"], "driver": "libvirt",
        "domain": dom_name})
    say("registered server %s by domain %s (disks %s)"
        % (server["id"], dom_name,
           ", ".join(d["name"] for d in server.get("disks", []))))
    return 0


# ------------------------------------------------------------- wait-ready

def _host_alive(host):
    from conductor.db import api as db
    try:
        with db.transaction() as s:
            return bool(db.host_is_alive(s, host))
    except Exception:  # noqa: BLE001 - the schema may not exist yet
        return False


def wait_ready_main(argv):
    p = argparse.ArgumentParser(prog="livesnap_tools.demo wait-ready")
    p.add_argument("--config-file", required=True)
    p.add_argument("--timeout", type=float, default=180.0)
    p.add_argument("--pid", type=int,
                   help="fail at once if this process exits")
    args = p.parse_args(argv)
    conf = read_config(args.config_file)
    api = API(conf["url"], admin_token_from(conf["token_file"] or ""),
              timeout=5.0)
    deadline = time.monotonic() + args.timeout

    def check_pid():
        if args.pid and not _testvm()._pid_alive(args.pid):
            raise DemoError("the livesnap service (pid %d) exited"
                            % args.pid)
        if time.monotonic() > deadline:
            raise DemoError("not ready after %d s" % args.timeout)

    while True:
        check_pid()
        try:
            api.list_servers()
            break
        except lsexc.ClientError:
            pass
        time.sleep(0.3)
    # The agent's first heartbeat: read it as the conductor does.
    from oslo_config import cfg

    from livesnap import conf as _conf  # noqa: F401
    cfg.CONF(["--config-file", args.config_file], project="livesnap",
             default_config_files=[], default_config_dirs=[])
    host = cfg.CONF.agent.host
    while not _host_alive(host):
        check_pid()
        time.sleep(0.3)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {"boot-vm": boot_vm_main, "wait-ready": wait_ready_main,
                "domain": domain_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m livesnap_tools.demo {%s} ..."
              % ",".join(sorted(commands)), file=sys.stderr)
        return 2
    import logging
    logging.basicConfig(level=logging.WARNING)
    # Probing a socket nobody listens on is expected here: not an error.
    logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return commands[argv[0]](argv[1:])
    except DemoError as exc:
        print("%s: error: %s" % (argv[0], exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
