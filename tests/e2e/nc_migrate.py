"""Live-migration helpers for the end-to-end tests, on top of nc.py.

Two nodes, each a real novacrond in its own network namespace, joined by a
veth pair (10.78.N.1/24 and 10.78.N.2/24). The daemons reach each other's
API (TCP, port 8470, the shared cluster token) and DWCP over the veth; the
test reaches each daemon over its unix socket (<dir>/data/api.sock), which
works across network namespaces. Faults are injected on that link (tc,
link down) or on the processes (kill -9).

The invariant every migration test checks, at every sample and at the
end: never two running copies of a guest. A copy runs when its serial log
gets new heartbeats. QEMU serves one QMP client and novacrond holds it, so
the tests cannot ask QEMU itself; the guest's own heartbeats are the
stronger witness anyway: two running copies of the same memory print the
same seq numbers, and both logs grow at once.

Everything created here is removed in cleanups that run even when the test
fails: the VMs (through the API), leftover QEMUs, the daemons, then the
namespaces.
"""

import collections
import fcntl
import json
import os
import pty
import re
import secrets
import signal
import struct
import subprocess
import termios
import threading
import time

import nc
from nc import fail

API_PORT = 8470
MIGRATE_TIMEOUT_S = 180  # one migration, including a slow (tbf) one


class Terminated(Exception):
    """SIGTERM arrived (`timeout`, a person): the test stops here, as a
    failure, so that its cleanups still run. QEMU is double-forked away
    from novacrond, and the namespaces are not any process's, so without
    the cleanups both would outlive the run."""


_terminated = False


def _on_sigterm(signum, frame):
    global _terminated
    if not _terminated:  # once: a second SIGTERM must not cut the cleanup short
        _terminated = True
        raise Terminated("SIGTERM: stopping the test and cleaning up")


signal.signal(signal.SIGTERM, _on_sigterm)


def run(*argv, check=True):
    """Runs a command (ip, tc); fails the test with its stderr when it
    fails and check is set. Returns the CompletedProcess."""
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    if check and p.returncode != 0:
        fail("%s: exit %d: %s" % (" ".join(argv), p.returncode,
                                  p.stderr.decode(errors="replace").strip()))
    return p


# ---- the network ------------------------------------------------------------

class Link:
    """Two network namespaces joined by a veth pair. Names carry the pid
    so parallel runs and other engineers' namespaces never collide; the
    subnet 10.78.N.0/24 is private to these namespaces anyway."""

    def __init__(self, tag="m"):
        pid = os.getpid()
        self.n = pid % 250 + 1
        self.ns = ["ncmig-%d-%s-a" % (pid, tag), "ncmig-%d-%s-b" % (pid, tag)]
        # interface names are at most 15 characters
        self.dev = ["vma%d%s" % (pid % 100000, tag[:1]), "vmb%d%s" % (pid % 100000, tag[:1])]
        self.addr = ["10.78.%d.1" % self.n, "10.78.%d.2" % self.n]
        self.created = []

    def up(self):
        for ns in self.ns:
            run("ip", "netns", "add", ns)
            self.created.append(ns)
        run("ip", "link", "add", self.dev[0], "netns", self.ns[0], "type", "veth",
            "peer", "name", self.dev[1], "netns", self.ns[1])
        for i in (0, 1):
            run("ip", "-n", self.ns[i], "addr", "add", self.addr[i] + "/24", "dev", self.dev[i])
            run("ip", "-n", self.ns[i], "link", "set", "lo", "up")
            run("ip", "-n", self.ns[i], "link", "set", self.dev[i], "up")
        # the link answers before any daemon starts
        nc.poll("%s to reach %s" % (self.ns[0], self.addr[1]),
                lambda: run("ip", "netns", "exec", self.ns[0], "ping", "-c", "1", "-W", "1",
                            self.addr[1], check=False).returncode == 0, 10)
        nc.log("link %s (%s) <-> %s (%s) up" % (self.ns[0], self.addr[0], self.ns[1],
                                               self.addr[1]))
        return self

    def limit(self, side, rate="50mbit"):
        """tbf on one side's veth: what that side sends is capped."""
        run("ip", "netns", "exec", self.ns[side], "tc", "qdisc", "add", "dev", self.dev[side],
            "root", "tbf", "rate", rate, "burst", "64kbit", "latency", "100ms")
        nc.log("tbf %s on %s" % (rate, self.dev[side]))

    def set_link(self, side, up):
        run("ip", "-n", self.ns[side], "link", "set", self.dev[side], "up" if up else "down")
        nc.log("link %s %s" % (self.dev[side], "up" if up else "down"))

    def down(self):
        """Removes the namespaces (the veth pair goes with them). A
        namespace lives on while a process is still in it, so this runs
        after the daemons and QEMUs are gone."""
        for ns in self.created:
            run("ip", "netns", "del", ns, check=False)
        self.created = []


def write_token(path):
    """A shared cluster token, 64 hex characters, mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


# ---- a node -------------------------------------------------------------------

class Node(nc.Daemon):
    """A novacrond inside a network namespace, listening on ADDR:8470 with
    the cluster token. Its files are in <tmp>/<label>/ (data/, the log)."""

    def __init__(self, tmpdir, label, ns, addr, token_file, extra_args=()):
        self.label, self.ns, self.addr, self.token_file = label, ns, addr, token_file
        d = os.path.join(tmpdir, label)
        os.makedirs(d, exist_ok=True)
        super().__init__(d, listen=False, extra_args=extra_args)

    @property
    def endpoint(self):
        return "%s:%d" % (self.addr, API_PORT)

    def start(self, timeout=20):
        if self.alive():
            fail("novacrond pid %d is already running" % self.pid)
        argv = ["ip", "netns", "exec", self.ns, nc.NOVACROND, "--data-dir", self.data,
                "--listen", self.endpoint, "--accel", self.accel,
                "--cluster-token-file", self.token_file] + self.extra_args
        with open(self.log_path, "ab") as lf:
            lf.write(("---- %s\n" % " ".join(argv)).encode())
            lf.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf,
                                         preexec_fn=nc._die_with_parent)
        self.port = API_PORT
        nc.log("node %s: novacrond pid %d on %s (%s)" % (self.label, self.proc.pid,
                                                       self.endpoint, self.data))

        def ready():
            if self.proc.poll() is not None:
                fail("node %s: novacrond exited with status %d during start-up:\n%s"
                     % (self.label, self.proc.returncode, self.log_tail()))
            try:
                return self.api.get("/readyz", timeout=5).status == 200
            except OSError:
                return False
        try:
            nc.poll("node %s to be ready" % self.label, ready, timeout)
        except AssertionError as e:
            fail("%s\n--- novacrond log ---\n%s" % (e, self.log_tail()))

    def kill9(self):
        nc.log("node %s: kill -9 novacrond pid %d" % (self.label, self.pid))
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    # -- queries that tolerate a dead daemon --

    def vm_or_none(self, name, timeout=5):
        """The VM object, None on 404; raises on anything else."""
        r = self.api.get("/v1/vms/" + name, timeout=timeout)
        if r.status == 404:
            return None
        if r.status != 200:
            fail("node %s: GET /v1/vms/%s: %r" % (self.label, name, r))
        return r.json

    def vm_names(self):
        return sorted(v["name"] for v in self.api.expect(200, "GET", "/v1/vms").json["vms"])

    def qemu_pids(self):
        """QEMUs whose command line names this node's data directory."""
        return nc.qemu_pids_for(self.data + os.sep)

    def migrate(self, name, to, **fields):
        """POST /v1/vms/{name}/migrate; expects 202 and returns the OP."""
        body = {"to": to.endpoint if isinstance(to, Node) else to}
        body.update(fields)
        r = self.api.request("POST", "/v1/vms/%s/migrate" % name, body)
        if r.status != 202:
            fail("node %s: migrate %s to %s: expected HTTP 202, got %r"
                 % (self.label, name, body["to"], r))
        return r.json["operation"]

    def op(self, op_id):
        return self.api.expect(200, "GET", "/v1/operations/" + op_id).json

    def wait_op_message(self, op_id, pred, timeout, what):
        """Polls the operation until pred(op) holds (e.g. mid-precopy);
        fails if it finishes first."""
        last = {}

        def check():
            op = self.op(op_id)
            last["op"] = op
            if op["status"] in ("succeeded", "failed", "cancelled"):
                fail("operation %s finished (%s: %r, error %r) before %s"
                     % (op_id, op["status"], op.get("message"), op.get("error"), what))
            return op if pred(op) else None
        try:
            return nc.poll(what, check, timeout, interval=0.1)
        except AssertionError as e:
            if "finished" in str(e):
                raise
            fail("%s; the operation is %r" % (e, last.get("op")))


def migration_available(node):
    """True once novacrond was built with migration: a migrate request for
    a VM that does not exist answers 404, not 503."""
    r = node.api.post("/v1/vms/nc-probe-no-such-vm/migrate", {"to": "127.0.0.1:1"})
    if r.status == 503 and "not available" in r.text:
        return False
    return True


# ---- the test case ---------------------------------------------------------------

class MigrationCase(nc.TestCase):
    """Two nodes joined by a link. setUp makes the link and the token;
    start_nodes() starts both daemons and registers the guest image on
    both; a test that finds novacrond built without migration is skipped
    (ctest shows it as skipped, exit 77)."""

    link_tag = "m"

    def setUp(self):
        if _terminated:
            self.skipTest("SIGTERM received earlier in this run")
        # Registered before nc.TestCase's own cleanup, so it runs after it:
        # the namespaces go once the daemons and QEMUs in them are gone.
        self.link = Link(self.link_tag)
        self.addCleanup(self.link.down)
        self.watches = []
        self.addCleanup(self._stop_watches)
        super().setUp()
        self.link.up()
        self.token_file = write_token(os.path.join(self.tmp, "cluster.token"))

    def _stop_watches(self):
        for w in self.watches:
            w.stop()

    def start_nodes(self, need_migration=True):
        a = Node(self.tmp, "a", self.link.ns[0], self.link.addr[0], self.token_file)
        self.daemons.append(a)
        b = Node(self.tmp, "b", self.link.ns[1], self.link.addr[1], self.token_file)
        self.daemons.append(b)
        if need_migration and not migration_available(a):
            self.skipTest("novacrond was built without live migration (POST .../migrate "
                          "answers 503 'live migration is not available'): the DWCP parts "
                          "are not all in src/dwcp yet")
        for n in (a, b):
            n.register_image()
        return a, b

    def watch(self, name, nodes):
        w = Watch(name, nodes)
        self.watches.append(w)
        w.start()
        return w


# ---- the two-copies watch ------------------------------------------------------

class Copy:
    """One incarnation of the guest's serial log on one node (a new file
    each time the VM arrives there)."""

    def __init__(self, node, ino):
        self.node, self.ino = node, ino
        self.offset = 0
        self.hbs = []  # (Heartbeat, host time received)

    @property
    def label(self):
        return "%s#%d" % (self.node.label, self.ino)

    def span(self):
        return (self.hbs[0][1], self.hbs[-1][1]) if self.hbs else None


class Watch:
    """Samples, every 50 ms, each node's serial log for the VM (new
    complete heartbeats, with the host time they were first seen) and,
    every few samples, each node's QEMU processes and VM state. check()
    fails if two copies ever ran at once: one seq printed by two copies,
    or two copies' heartbeat spans overlapping by more than one sampling
    interval (heartbeats come every 100 ms, so two copies running side by
    side for 0.3 s are caught)."""

    INTERVAL_S = 0.05
    OVERLAP_TOLERANCE_S = 0.25

    def __init__(self, name, nodes):
        self.name, self.nodes = name, list(nodes)
        self.copies = []
        self.current = {}  # node label -> Copy
        self.timeline = []  # (host time, node label, state, qemu pids)
        self.errors = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()

    def stop(self):
        if self.thread.is_alive():
            self.stopping.set()
            self.thread.join(10)

    def _read(self, node, now):
        path = os.path.join(node.run_dir(self.name), "serial.log")
        try:
            st = os.stat(path)
            with open(path, "rb") as f:
                cur = self.current.get(node.label)
                if cur is None or cur.ino != st.st_ino or st.st_size < cur.offset:
                    cur = Copy(node, st.st_ino)
                    self.current[node.label] = cur
                    self.copies.append(cur)
                f.seek(cur.offset)
                data = f.read()
        except FileNotFoundError:
            # Gone (the VM left this node): whatever appears there next is
            # a new copy, even if the file system reuses the inode.
            self.current.pop(node.label, None)
            return
        end = data.rfind(b"\n") + 1
        for line in data[:end].split(b"\n"):
            if b"NCMEMBAD" in line or b"NCERROR" in line:
                self.errors.append("%s: guest reported %r" % (cur.label, line.strip()))
            for m in nc.HB_RE.finditer(line):
                hb = nc.Heartbeat(int(m.group(1)), int(m.group(2)), int(m.group(3)),
                                  m.group(4).decode(), int(m.group(5)), 0)
                if hb.mem != "ok":
                    self.errors.append("%s: guest memory check failed: %r"
                                       % (cur.label, line.strip()))
                cur.hbs.append((hb, now))
        cur.offset += end

    def _run(self):
        i = 0
        while not self.stopping.is_set():
            now = time.monotonic()
            with self.lock:
                for n in self.nodes:
                    self._read(n, now)
                if i % 5 == 0:
                    for n in self.nodes:
                        state = "?"
                        try:
                            v = n.vm_or_none(self.name, timeout=2)
                            state = v["state"] if v else "-"
                        except Exception:  # daemon down or busy
                            state = "unreachable"
                        self.timeline.append((now, n.label, state, n.qemu_pids()))
            i += 1
            self.stopping.wait(self.INTERVAL_S)

    # -- results --

    def sample_now(self):
        """Reads the logs once more on the caller's thread."""
        with self.lock:
            now = time.monotonic()
            for n in self.nodes:
                self._read(n, now)

    def running_copies(self, window_s=1.0):
        """Copies that printed a heartbeat in the last window_s seconds."""
        self.sample_now()
        now = time.monotonic()
        with self.lock:
            return [c for c in self.copies if c.hbs and now - c.hbs[-1][1] <= window_s]

    def check(self):
        """Fails if two copies ever ran at once or the guest reported bad
        memory. Returns the copies in order of first heartbeat."""
        self.sample_now()
        with self.lock:
            problems = list(self.errors)
            copies = [c for c in self.copies if c.hbs]
            seen = {}
            for c in copies:
                for hb, t in c.hbs:
                    if hb.seq in seen and seen[hb.seq][0] is not c:
                        other = seen[hb.seq]
                        problems.append("seq %d printed by two copies: %s (t_ms %d) and %s "
                                        "(t_ms %d)" % (hb.seq, other[0].label, other[1],
                                                       c.label, hb.t_ms))
                        break
                    seen.setdefault(hb.seq, (c, hb.t_ms))
            for i, x in enumerate(copies):
                for y in copies[i + 1:]:
                    if x.node is y.node:
                        continue
                    (fx, lx), (fy, ly) = x.span(), y.span()
                    overlap = min(lx, ly) - max(fx, fy)
                    if overlap > self.OVERLAP_TOLERANCE_S:
                        problems.append("two copies ran at once for %.2f s: %s printed seq "
                                        "%d..%d and %s printed seq %d..%d"
                                        % (overlap, x.label, x.hbs[0][0].seq, x.hbs[-1][0].seq,
                                           y.label, y.hbs[0][0].seq, y.hbs[-1][0].seq))
            for t, label, state, pids in self.timeline:
                if len(pids) > 1:
                    problems.append("[%7.2f] node %s had %d QEMUs for the vm at once: %r"
                                    % (t - nc._T0, label, len(pids), pids))
                    break
            if problems:
                fail("two-copies/integrity check failed:\n  " + "\n  ".join(problems)
                     + "\n" + self.describe_locked())
            return sorted(copies, key=lambda c: c.hbs[0][1])

    def describe_locked(self):
        out = ["copies:"]
        for c in self.copies:
            if c.hbs:
                out.append("  %s: seq %d..%d, %d heartbeats, seen %.2f..%.2f"
                           % (c.label, c.hbs[0][0].seq, c.hbs[-1][0].seq, len(c.hbs),
                              c.hbs[0][1] - nc._T0, c.hbs[-1][1] - nc._T0))
            else:
                out.append("  %s: no heartbeats" % c.label)
        out.append("timeline (last 40 changes):")
        last, rows = {}, []
        for t, label, state, pids in self.timeline:
            if last.get(label) != (state, pids):
                last[label] = (state, pids)
                rows.append("  [%7.2f] %s: %s qemu %s" % (t - nc._T0, label, state, pids))
        out.extend(rows[-40:])
        return "\n".join(out)

    def describe(self):
        with self.lock:
            return self.describe_locked()

    def switch(self, src, dst, after=None, window=10):
        """The hand-over from node src to node dst, using the latest src
        copy whose heartbeats precede a dst copy's first one: a Switch with
        the last heartbeat on src and the first on dst (and their host
        receive times), and the largest gaps, in the guest's t_ms and in
        host receive times, between consecutive heartbeats among the last
        `window` on src and the first `window` on dst."""
        self.check()
        with self.lock:
            best = None
            for x in self.copies:
                if x.node is not src or not x.hbs:
                    continue
                for y in self.copies:
                    if y.node is not dst or not y.hbs or y.hbs[0][1] < x.hbs[-1][1]:
                        continue
                    if after is not None and y.hbs[0][1] < after:
                        continue
                    if best is None or y.hbs[0][1] < best[1].hbs[0][1]:
                        best = (x, y)
            if best is None:
                fail("no hand-over from %s to %s in the heartbeats\n%s"
                     % (src.label, dst.label, self.describe_locked()))
            x, y = best
            around = x.hbs[-window:] + y.hbs[:window]
            pairs = list(zip(around, around[1:]))
            return Switch(x.hbs[-1][0], x.hbs[-1][1], y.hbs[0][0], y.hbs[0][1],
                          max(b[0].t_ms - a[0].t_ms for a, b in pairs),
                          max(b[1] - a[1] for a, b in pairs) * 1000)


Switch = collections.namedtuple(
    "Switch", "last_src t_last first_dst t_first max_gap_ms max_host_gap_ms")


def wait_new_heartbeats(node, name, count=5, timeout=20):
    """Waits until node's copy of the guest prints count more heartbeats
    (all mem=ok, seqs increasing by one). Returns them."""
    s = node.serial(name)
    m = s.mark()
    hbs = nc.poll("%d new heartbeats from vm %s on node %s" % (count, name, node.label),
                  lambda: (lambda h: h if len(h) >= count else None)(s.heartbeats(since=m)),
                  timeout)
    nc.expect_increasing("heartbeats on node %s" % node.label, hbs, step=1)
    return hbs


def expect_gone(node, name, timeout=30, files_timeout=5):
    """The VM is not on node: 404 within timeout, then no QEMU with its
    run dir and no files (the run dir removed) within files_timeout."""
    run_dir = node.run_dir(name)
    nc.poll("vm %s to be gone from node %s (404)" % (name, node.label),
            lambda: node.vm_or_none(name) is None, timeout)
    nc.poll("no QEMU for vm %s on node %s" % (name, node.label),
            lambda: not nc.qemu_pids_for(run_dir + os.sep), files_timeout)
    try:
        nc.poll("%s to be removed" % run_dir, lambda: not os.path.exists(run_dir),
                files_timeout)
    except AssertionError:
        left = []
        for root, _, files in os.walk(run_dir):
            left += [os.path.join(root, f) for f in files]
        fail("node %s: vm %s is gone but its directory %s remains with %r"
             % (node.label, name, run_dir, left))


def expect_no_qemu(node):
    pids = node.qemu_pids()
    if pids:
        fail("node %s: QEMU processes left: %r" % (node.label,
                                                   [(p, nc.cmdline(p)[:1]) for p in pids]))


# The DWCP page format this tree's novacrond speaks (NC_HDE_VERSION), for
# tests that call POST /v1/migrations/incoming themselves.
with open(os.path.join(nc.SRC, "src", "dwcp", "hde.h")) as _f:
    HDE_VERSION = int(re.search(r"#define NC_HDE_VERSION (\d+)", _f.read()).group(1))

IMGID = os.path.join(nc.BUILD, "bin", "nc-imgid")


def base_disk(path=None):
    """The identity of a base disk file (default: the test image's) as a
    source sends it in POST /v1/migrations/incoming: {"size", "xxh128"}
    (tools/nc-imgid, src/vm/imgid.h)."""
    if path is None:
        with open(nc.IMAGE_JSON) as f:
            path = json.load(f)["disk"]
    p = subprocess.run([IMGID, path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    if p.returncode != 0:
        fail("%s %s: exit %d: %s" % (IMGID, path, p.returncode,
                                     p.stderr.decode(errors="replace").strip()))
    j = json.loads(p.stdout)
    return {"size": j["size"], "xxh128": j["xxh128"]}


FINAL_RE = re.compile(r"pages (\d+): zero (\d+), ref (\d+), delta (\d+), raw (\d+)"
                      r"(?:, stored (\d+))?")
WIRE_RE = re.compile(r"([\d.]+) MiB on the wire for ([\d.]+) MiB of stream")
KERNEL_RE = re.compile(r"against the kernel file: delta (\d+)")
DOWNTIME_RE = re.compile(r" s \(\w+\), downtime (\d+) ms, ")
RAM_RE = re.compile(r"\(([\d.]+)% of the guest's (\d+) MiB of RAM\)")


def metric(node, series):
    """The value of one series (name{labels} as rendered) on node's
    /metrics, 0.0 when the series is not there yet."""
    body = node.api.expect(200, "GET", "/metrics").body.decode()
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, val = line.rpartition(" ")
            if name == series:
                return float(val)
    return 0.0


def parse_final(message):
    """{'pages','zero','ref','delta','raw','stored','wire_mib','stream_mib',
    'kernel_delta','downtime_ms','ram_pct','ram_mib'} from
    the final message of a successful migration, or {} when it does not
    have that form."""
    out = {}
    m = FINAL_RE.search(message or "")
    if m:
        out.update(zip(("pages", "zero", "ref", "delta", "raw", "stored"),
                       (int(g or 0) for g in m.groups())))
    m = WIRE_RE.search(message or "")
    if m:
        out["wire_mib"], out["stream_mib"] = float(m.group(1)), float(m.group(2))
    m = KERNEL_RE.search(message or "")
    if m:
        out["kernel_delta"] = int(m.group(1))
    m = DOWNTIME_RE.search(message or "")
    if m:
        out["downtime_ms"] = int(m.group(1))
    m = RAM_RE.search(message or "")
    if m:
        out["ram_pct"], out["ram_mib"] = float(m.group(1)), int(m.group(2))
    return out


def in_precopy(op):
    """The operation is copying memory: QEMU reports passes, some sent."""
    return "pass " in (op.get("message") or "") and (op.get("progress") or 0) >= 0.05


def start_slow_migration(link, src, dst, name, rate="50mbit", **fields):
    """Caps src's side of the link with tbf, starts migrating name to dst
    and waits until it is copying memory. Returns (op, dst's QEMU pids)."""
    link.limit(0 if src.label == "a" else 1, rate)
    op = src.migrate(name, dst, **fields)
    return op, await_precopy(src, dst, name, op["id"])


def await_precopy(src, dst, name, op_id):
    """Waits until the migration op_id copies memory, and checks that dst
    has the incoming VM meanwhile. Returns dst's QEMU pids."""
    cur = src.wait_op_message(op_id, in_precopy, 60, "the migration to be in precopy")
    nc.log("mid-precopy: %s" % cur["message"])
    v = dst.vm_or_none(name)
    pids = dst.qemu_pids()
    nc.log("node %s meanwhile: vm %s, QEMU %r" % (dst.label, v and v["state"], pids))
    if v is None or v["state"] != "migrating" or len(pids) != 1:
        fail("mid-precopy, node %s should have the incoming vm (state migrating) and one "
             "QEMU: vm %r, QEMUs %r" % (dst.label, v, pids))
    return pids


class TtyCommand:
    """A command with its stderr on a pseudo-terminal `cols` wide (stdout a
    pipe), as when a person runs the CLI: what it draws on the terminal is
    collected on a thread. Add .proc to TestCase.helpers so a test that
    fails midway does not leave it running."""

    def __init__(self, argv, cols=100):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
        self.cols = cols
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=slave, preexec_fn=nc._die_with_parent)
        os.close(slave)
        self.master = master
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not data:
                break
            with self.lock:
                self.buf += data
        os.close(self.master)

    def text(self):
        with self.lock:
            return bytes(self.buf).decode(errors="replace")

    def wait(self, timeout):
        """(exit status, stdout) once the command ends."""
        rc = self.proc.wait(timeout)
        out = self.proc.stdout.read().decode(errors="replace")
        self.proc.stdout.close()
        self.thread.join(5)
        return rc, out

    def rows(self):
        """What the terminal showed, cut into rows: at CR and LF, with the
        CSI sequences (cursor up, erase) taken out."""
        return [r for r in re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", self.text()))
                if r]


def expect_runs_here(node, name, pid=None, heartbeats=10):
    """node runs the VM: record running (desired running), its pid the one
    live QEMU of the node (and == pid when given), heartbeats continue."""
    v = node.wait_state(name, "running", 30)
    expect_running_record(node, v, pid)
    return v, wait_new_heartbeats(node, name, heartbeats)


def expect_running_record(node, v, pid=None):
    nc.expect_eq("desired state of vm %s on %s" % (v["name"], node.label), "running",
                 v["desired_state"])
    if pid is not None:
        nc.expect_eq("QEMU pid of vm %s on %s" % (v["name"], node.label), pid, v["pid"])
    if not v["pid"] or not nc.pid_alive(v["pid"]):
        fail("node %s: the record's pid %r is not a live process" % (node.label, v["pid"]))
    nc.expect_eq("QEMUs on node %s" % node.label, [v["pid"]], node.qemu_pids())
