"""Harness for NovaCron's end-to-end tests.

The tests run the real binaries: novacrond from ${NC_BUILD}/bin, real QEMU
guests booted from the test image in ${NC_BUILD}/guest (built by `make
guest`), and, where a test needs it, the real CLI, promtool and Prometheus.
In the spirit of Redis's start_server and WireGuard's netns.sh, every test
gets its own temporary directory, its own daemon and its own guests, and
leaves nothing behind: at the end the harness deletes every VM through the
API, then kills any QEMU whose command line still names the test's
directory, then stops the daemon.

Python 3 standard library only. Environment:
  NC_BUILD     the CMake build directory (default: <repo>/build)
  NC_SRC       the source directory (default: this file's ../..)
  NC_CLI       the CLI binary (default: ${NC_BUILD}/bin/novacron)
  NC_E2E_KEEP  set to 1 to keep each test's directory for inspection

Timeouts are generous multiples of what LAB.md measured (a TCG guest prints
its first heartbeat ~3.5 s after launch), so a loaded machine slows the
suite down instead of failing it.
"""

import collections
import ctypes
import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("NC_SRC") or os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("NC_BUILD") or os.path.join(SRC, "build")
NOVACROND = os.path.join(BUILD, "bin", "novacrond")
CLI = os.environ.get("NC_CLI") or os.path.join(BUILD, "bin", "novacron")
GUEST_DIR = os.path.join(BUILD, "guest")
IMAGE_JSON = os.path.join(GUEST_DIR, "image.json")
IMAGE = "nc-test"

BOOT_TIMEOUT_S = 45  # launch to first heartbeat; ~3.5 s measured
OP_TIMEOUT_S = 90  # any single operation
_T0 = time.monotonic()


def log(msg):
    """A progress line on stderr, with seconds since the test file began;
    ctest --output-on-failure shows it when a test fails."""
    sys.stderr.write("[%7.2f] %s\n" % (time.monotonic() - _T0, msg))
    sys.stderr.flush()


def fail(msg):
    raise AssertionError(msg)


def expect_eq(what, expected, actual, context=""):
    """Asserts expected == actual and prints both (and the context)."""
    if expected != actual:
        fail("%s: expected %r, got %r%s" % (what, expected, actual,
                                             ("\n  " + context) if context else ""))


def poll(what, fn, timeout, interval=0.1):
    """Calls fn until it returns something truthy and returns that; fails
    after timeout seconds naming what was awaited and fn's last result."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            fail("timed out after %.1f s waiting for %s (last: %r)" % (timeout, what, last))
        time.sleep(interval)


# ---- processes ------------------------------------------------------------

def proc_state(pid):
    """The one-letter state of pid from /proc, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may contain spaces and parentheses; the state follows the last ')'.
    return data[data.rindex(b")") + 2:][:1].decode()


def pid_alive(pid):
    """True while pid exists and is not a zombie. QEMU is double-forked
    away from novacrond, so whoever inherits it may reap it late."""
    return proc_state(pid) not in (None, "Z", "X")


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def qemu_machine(pid):
    """The value of -machine on a QEMU's command line, or None."""
    argv = cmdline(pid)
    for i, a in enumerate(argv[:-1]):
        if a == "-machine":
            return argv[i + 1]
    return None


def pids_whose_cmdline_contains(text, qemu_only=False):
    """Live processes (not this one) with text in an argument."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        argv = cmdline(pid)
        if not argv or not pid_alive(pid):
            continue
        if qemu_only and not os.path.basename(argv[0]).startswith("qemu-system"):
            continue
        if any(text in a for a in argv):
            out.append(pid)
    return out


def qemu_pids_for(path):
    """QEMU processes whose command line names path (a run dir)."""
    return pids_whose_cmdline_contains(path, qemu_only=True)


def wait_gone(pid, timeout=10):
    poll("pid %d to exit" % pid, lambda: not pid_alive(pid), timeout)


def unix_sockets_under(path):
    """Bound unix socket paths under path, from /proc/net/unix."""
    out = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[7].startswith(path):
                out.add(parts[7])
    return sorted(out)


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL if the test runner dies, so an
    interrupted run does not leave a daemon behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # best effort only
        pass


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return "(%s does not exist)" % path
    text = data.decode(errors="replace").splitlines()
    return "\n".join(text[-lines:])


# ---- HTTP -----------------------------------------------------------------

class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix stream socket."""

    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


class Response:
    def __init__(self, method, path, status, headers, body):
        self.method, self.path = method, path
        self.status = status
        self.headers = headers
        self.body = body
        self.json = None
        ctype = headers.get("Content-Type", "")
        if ctype.startswith("application/json"):
            try:
                self.json = json.loads(body)
            except ValueError:
                pass

    @property
    def text(self):
        return self.body.decode(errors="replace")

    @property
    def error(self):
        """The "error" object of an error answer, or {}."""
        if isinstance(self.json, dict) and isinstance(self.json.get("error"), dict):
            return self.json["error"]
        return {}

    def __repr__(self):
        body = self.text
        if len(body) > 600:
            body = body[:600] + "...(%d bytes)" % len(self.body)
        return "%s %s -> %d %s" % (self.method, self.path, self.status, body.strip())


class Client:
    """A small API client: the unix socket (no token), or TCP with an
    optional bearer token. One connection per request."""

    def __init__(self, unix_path=None, port=None, token=None, timeout=30):
        self.unix_path, self.port, self.token, self.timeout = unix_path, port, token, timeout

    def connect(self, timeout=None):
        t = timeout or self.timeout
        if self.unix_path:
            return UnixHTTPConnection(self.unix_path, timeout=t)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=t)

    def request(self, method, path, body=None, raw=None, headers=None,
                content_type="application/json", timeout=None, chunked=False):
        """body is JSON-encoded; raw bytes are sent as they are (with
        chunked, in chunked transfer encoding, without Content-Length).
        Returns a Response whatever the status."""
        hdrs = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
        elif raw is not None:
            data = raw
        if data is not None and content_type is not None:
            hdrs["Content-Type"] = content_type
        if self.token is not None:
            hdrs["Authorization"] = "Bearer " + self.token
        hdrs.update(headers or {})
        if chunked and data is not None:
            data = iter([data[i:i + 16384] for i in range(0, len(data), 16384)])
        conn = self.connect(timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs, encode_chunked=chunked)
            r = conn.getresponse()
            return Response(method, path, r.status, r.headers, r.read())
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def expect(self, status, method, path, body=None, **kw):
        """request() that fails unless the answer has this status."""
        r = self.request(method, path, body=body, **kw)
        if r.status != status:
            fail("expected HTTP %d, got %r" % (status, r))
        return r


class EventStream:
    """GET /v1/events, read on a thread into a queue of (id, type, data)
    tuples, so the test can wait with timeouts."""

    def __init__(self, client):
        self.conn = client.connect(timeout=600)
        headers = {}
        if client.token is not None:
            headers["Authorization"] = "Bearer " + client.token
        self.conn.request("GET", "/v1/events", headers=headers)
        self.sock = self.conn.sock  # http.client may drop its reference
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            fail("GET /v1/events: HTTP %d %r" % (self.resp.status, self.resp.read()))
        ctype = self.resp.headers.get("Content-Type", "")
        if not ctype.startswith("text/event-stream"):
            fail("GET /v1/events: Content-Type %r, expected text/event-stream" % ctype)
        self.q = queue.Queue()
        self.closed = False
        self.thread = threading.Thread(target=self._reader, daemon=True)
        self.thread.start()

    def _reader(self):
        ev_id, ev_type, data = None, None, []
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    break
                line = line.decode().rstrip("\r\n")
                if line == "":
                    if ev_type is not None or data:
                        self.q.put((ev_id, ev_type or "message", "\n".join(data)))
                    ev_id, ev_type, data = None, None, []
                elif line.startswith(":"):
                    continue  # comment / keepalive
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "id":
                        ev_id = value
                    elif field == "event":
                        ev_type = value
                    elif field == "data":
                        data.append(value)
        except Exception as e:  # the socket closed under us, or worse
            if not self.closed:
                self.q.put(("error", repr(e), ""))
        self.q.put(None)

    def next(self, timeout):
        """The next event, or None when the stream ended or timed out."""
        try:
            return self.q.get(timeout=max(timeout, 0))
        except queue.Empty:
            return None

    def close(self):
        """Idempotent; unblocks and joins the reader."""
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.resp.close()
        self.conn.close()
        self.sock.close()
        self.thread.join(5)
        if self.thread.is_alive():
            fail("event stream reader did not stop after close")


# ---- the guest's serial console ---------------------------------------------

Heartbeat = collections.namedtuple("Heartbeat", "seq t_ms dirtied_mib mem verified offset")
HB_RE = re.compile(rb"NCHB seq=(\d+) t_ms=(\d+) dirtied_mib=(\d+) mem=(\w+) verified=(\d+)")


class Serial:
    """Reads the heartbeats nc-workload prints on the serial console
    (guest/workload.c): "NCHB seq=<n> t_ms=<ms> dirtied_mib=<n>
    mem=ok|BAD verified=<n>", one every 100 ms by default. Offsets are byte
    offsets in serial.log; only complete lines are parsed. Every parse
    fails the test if any heartbeat says mem=BAD or the workload reported a
    bad page (NCMEMBAD) or an error (NCERROR)."""

    def __init__(self, path):
        self.path = path

    def read(self):
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def mark(self):
        """Offset just past the last complete line: heartbeats(since=mark)
        are the ones that complete after this call."""
        data = self.read()
        return data.rfind(b"\n") + 1

    def heartbeats(self, since=0):
        data = self.read()
        if since > len(data):
            fail("%s shrank from %d to %d bytes (truncated by a restart?)"
                 % (self.path, since, len(data)))
        out = []
        pos = since
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                break
            line = data[pos:nl]
            if b"NCMEMBAD" in line or b"NCERROR" in line:
                fail("guest workload reported %r at offset %d of %s"
                     % (line.strip(), pos, self.path))
            for m in HB_RE.finditer(line):
                hb = Heartbeat(int(m.group(1)), int(m.group(2)), int(m.group(3)),
                               m.group(4).decode(), int(m.group(5)), pos)
                if hb.mem != "ok":
                    fail("guest memory check failed: %r in %s" % (line.strip(), self.path))
                out.append(hb)
            pos = nl + 1
        return out

    def last(self, since=0):
        hbs = self.heartbeats(since)
        return hbs[-1] if hbs else None

    def wait_heartbeat(self, after_seq=None, since=0, timeout=BOOT_TIMEOUT_S, pred=None):
        """The first heartbeat completed after offset since (with a seq
        above after_seq, and satisfying pred, when given)."""
        def find():
            for hb in self.heartbeats(since):
                if after_seq is not None and hb.seq <= after_seq:
                    continue
                if pred is not None and not pred(hb):
                    continue
                return hb
            return None
        try:
            return poll("a heartbeat in %s (after seq %s, since offset %d)"
                        % (self.path, after_seq, since), find, timeout)
        except AssertionError as e:
            fail("%s\n--- tail of %s ---\n%s" % (e, self.path, tail(self.path, 15)))

    def heartbeats_during(self, seconds):
        m = self.mark()
        time.sleep(seconds)
        return self.heartbeats(since=m)


def expect_increasing(what, hbs, step=None):
    """Asserts the seqs strictly increase (by exactly step, when given)."""
    seqs = [h.seq for h in hbs]
    for a, b in zip(seqs, seqs[1:]):
        if b <= a or (step is not None and b - a != step):
            fail("%s: heartbeat seqs are not increasing%s: ...%d, %d... in %r"
                 % (what, "" if step is None else " by %d" % step, a, b, seqs))


# ---- the daemon -------------------------------------------------------------

LISTEN_RE = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


class Daemon:
    """One novacrond on <tmpdir>/data, its stderr appended to
    <tmpdir>/novacrond.log across restarts.

    accel is pinned to tcg: KVM does not work on these machines (LAB.md),
    and with accel=auto a restarted daemon probes it by booting one more
    guest, which the two-guest budget has no room for."""

    def __init__(self, tmpdir, listen=True, accel="tcg", extra_args=()):
        self.tmpdir = tmpdir
        self.data = os.path.join(tmpdir, "data")
        self.log_path = os.path.join(tmpdir, "novacrond.log")
        self.listen = listen
        self.accel = accel
        self.extra_args = list(extra_args)
        self.proc = None
        self.port = None
        self.api = Client(unix_path=os.path.join(self.data, "api.sock"))
        self.start()

    # -- process control --

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=20):
        if self.alive():
            fail("novacrond pid %d is already running" % self.pid)
        argv = [NOVACROND, "--data-dir", self.data, "--accel", self.accel] + self.extra_args
        if self.listen:
            argv += ["--listen", "127.0.0.1:0"]
        with open(self.log_path, "ab") as lf:
            offset = lf.tell()
            lf.write(("---- %s\n" % " ".join(argv)).encode())
            lf.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf,
                                         preexec_fn=_die_with_parent)
        log("novacrond pid %d started on %s" % (self.proc.pid, self.data))

        def ready():
            if self.proc.poll() is not None:
                fail("novacrond exited with status %d during start-up:\n%s"
                     % (self.proc.returncode, self.log_tail()))
            if self.listen and self.port is None:
                with open(self.log_path, "rb") as f:
                    f.seek(offset)
                    m = LISTEN_RE.search(f.read().decode(errors="replace"))
                if not m:
                    return False
                self.port = int(m.group(1))
            try:
                return self.api.get("/readyz", timeout=5).status == 200
            except OSError:
                return False
        self.port = None
        try:
            poll("novacrond to be ready", ready, timeout)
        except AssertionError as e:
            fail("%s\n--- novacrond log ---\n%s" % (e, self.log_tail()))

    def kill9(self):
        log("kill -9 novacrond pid %d" % self.pid)
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout=20):
        """SIGTERM, and fail if it does not exit in time (then SIGKILL)."""
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            fail("novacrond pid %d ignored SIGTERM for %d s" % (self.pid, timeout))

    def restart(self):
        if self.alive():
            self.stop()
        self.start()

    def log_tail(self, lines=60):
        return tail(self.log_path, lines)

    # -- API helpers --

    @property
    def token(self):
        with open(os.path.join(self.data, "api.token")) as f:
            return f.read().strip()

    def tcp(self, token=None):
        """A TCP client; token None = no Authorization header."""
        if not self.port:
            fail("novacrond was started without --listen")
        return Client(port=self.port, token=token)

    def register_image(self):
        with open(IMAGE_JSON) as f:
            img = json.load(f)
        return self.api.expect(201, "POST", "/v1/images", img).json

    def vm(self, name):
        return self.api.expect(200, "GET", "/v1/vms/" + name).json

    def run_dir(self, name):
        return os.path.join(self.data, "vms", name)

    def serial(self, name):
        return Serial(os.path.join(self.run_dir(name), "serial.log"))

    def wait_op(self, op, timeout=OP_TIMEOUT_S):
        """Waits for an operation (an id or an OP object) to finish, with
        GET /v1/operations/{id}?wait_s=, and returns it."""
        op_id = op["id"] if isinstance(op, dict) else op
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            r = self.api.expect(200, "GET", "/v1/operations/%s?wait_s=%d"
                                % (op_id, max(0, min(10, int(left)))), timeout=40)
            if r.json["status"] in ("succeeded", "failed", "cancelled"):
                return r.json
            if left <= 0:
                fail("operation %s did not finish in %d s: %r" % (op_id, timeout, r.json))

    def op_ok(self, r, timeout=OP_TIMEOUT_S):
        """r: a 202 answer {"operation": OP} or an OP; waits and fails
        unless the operation succeeded."""
        op = r.json["operation"] if isinstance(r, Response) else r
        done = self.wait_op(op, timeout)
        if done["status"] != "succeeded":
            fail("operation %s (%s %s) ended %s: %r" % (done["id"], done["kind"], done["target"],
                                                       done["status"], done.get("error")))
        return done

    def action(self, name, act, body=None, timeout=OP_TIMEOUT_S):
        """POST /v1/vms/{name}/{act}; expects 202 and success."""
        r = self.api.expect(202, "POST", "/v1/vms/%s/%s" % (name, act), body)
        return self.op_ok(r, timeout)

    def create_vm(self, name, start=True, memory="256M", cmdline_append=None, **fields):
        """Defines a VM from the test image; with start, waits for the
        start operation to succeed and the VM to be running. Returns the
        VM object."""
        body = {"name": name, "image": IMAGE, "memory": memory, "start": start}
        if cmdline_append is not None:
            body["cmdline_append"] = cmdline_append
        body.update(fields)
        r = self.api.expect(201, "POST", "/v1/vms", body)
        if start:
            if not r.json.get("operation"):
                fail("create with start returned no operation: %r" % r)
            self.op_ok(r.json["operation"])
            return self.wait_state(name, "running", 10)
        return r.json["vm"]

    def wait_state(self, name, state, timeout=30):
        last = {}

        def check():
            last["vm"] = self.vm(name)
            return last["vm"] if last["vm"]["state"] == state else None
        try:
            return poll("vm %s to be %s" % (name, state), check, timeout)
        except AssertionError:
            v = last.get("vm", {})
            fail("vm %s: expected state %r within %d s, it is %r (reason %r, history %r)"
                 % (name, state, timeout, v.get("state"), v.get("state_reason"),
                    v.get("history")))

    def boot(self, name, **kw):
        """create_vm + the first heartbeat. Returns (vm, heartbeat)."""
        t = time.monotonic()
        vm = self.create_vm(name, **kw)
        hb = self.serial(name).wait_heartbeat()
        log("vm %s: running, pid %s, first heartbeat seq %d after %.1f s"
            % (name, vm["pid"], hb.seq, time.monotonic() - t))
        return vm, hb


# ---- the test case ----------------------------------------------------------

class TestCase(unittest.TestCase):
    """Gives each test a fresh directory; start_daemon() gives it daemons.
    On failure the daemon log and each VM's serial and QEMU log tails are
    printed before the cleanup removes them."""

    maxDiff = None

    def setUp(self):
        for path, how in ((NOVACROND, "build it with `make build`"),
                          (IMAGE_JSON, "build the test guest with `make guest`")):
            if not os.path.exists(path):
                fail("%s is missing: %s (NC_BUILD=%s)" % (path, how, BUILD))
        self.tmp = tempfile.mkdtemp(prefix="nc-e2e-")
        self.daemons = []
        self.helpers = []  # other processes (Popen) to kill at the end
        self.addCleanup(self._cleanup)
        log("---- %s (dir %s)" % (self.id(), self.tmp))

    def start_daemon(self, **kw):
        d = Daemon(self.tmp, **kw)
        self.daemons.append(d)
        return d

    def _failed(self):
        """Has this test failed so far? (Python 3.11 reports a failure to
        the result as it happens, before the cleanups run.)"""
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return False
        return any(t is self for t, _ in list(result.failures) + list(result.errors))

    def _dump(self):
        out = ["", "=" * 30 + " diagnostics for %s " % self.id() + "=" * 30]
        for d in self.daemons:
            out.append("--- novacrond log (%s) ---\n%s" % (d.log_path, d.log_tail(80)))
            vms_dir = os.path.join(d.data, "vms")
            for name in sorted(os.listdir(vms_dir)) if os.path.isdir(vms_dir) else []:
                for f, n in (("qemu.log", 15), ("serial.log", 15)):
                    p = os.path.join(vms_dir, name, f)
                    out.append("--- %s ---\n%s" % (p, tail(p, n)))
        sys.stderr.write("\n".join(out) + "\n")

    def _cleanup(self):
        if self._failed():
            self._dump()
        for h in self.helpers:
            if h.poll() is None:
                h.kill()
                h.wait(10)
        for d in self.daemons:
            if not d.alive():
                continue
            try:
                vms = d.api.expect(200, "GET", "/v1/vms", timeout=10).json["vms"]
                ops = []
                for v in vms:
                    r = d.api.delete("/v1/vms/" + v["name"], timeout=10)
                    if r.status == 202:
                        ops.append(r.json["operation"])
                for op in ops:
                    d.wait_op(op, timeout=40)
            except Exception as e:  # keep cleaning up
                log("cleanup: deleting VMs failed: %r" % e)
        for pid in qemu_pids_for(self.tmp):
            log("cleanup: killing leftover QEMU pid %d" % pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for d in self.daemons:
            try:
                d.stop()
            except AssertionError as e:
                log("cleanup: %s" % e)
        for pid in pids_whose_cmdline_contains(self.tmp):
            log("cleanup: killing leftover process %d %r" % (pid, cmdline(pid)[:3]))
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if os.environ.get("NC_E2E_KEEP") == "1":
            log("keeping %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


SKIPPED = 77  # the exit status ctest's SKIP_RETURN_CODE maps to "Skipped"


def main():
    """unittest.main, but a file whose every test was skipped exits 77 so
    ctest shows it as skipped rather than passed."""
    prog = unittest.main(verbosity=2, exit=False)
    r = prog.result
    if not r.wasSuccessful():
        sys.exit(1)
    if r.testsRun and len(r.skipped) == r.testsRun:
        sys.exit(SKIPPED)
    sys.exit(0)
