"""Cluster helpers for the end-to-end tests, on top of nc.py and nc_migrate.py.

Three hosts, each a network namespace with a real novacrond in it, joined
by a bridge that lives in a fourth ("switch") namespace: one veth pair per
host, 10.79.N.{1,2,3}/24 on the host end, the other end enslaved to the
bridge. Each daemon starts as a single node on SQLite and the cluster is
formed the way an operator does it: `novacron cluster init` on the first
host (its daemon starts an embedded etcd member and re-execs itself in
cluster mode), then `novacron cluster join` on the other two. form() makes
every host a control-plane host, so there are three etcd members and
losing any one keeps a majority; init_cluster() and join(worker=True) let a
test form other shapes, e.g. with workers, which run no member.

The test reaches every daemon over its unix socket (<dir>/data/api.sock),
which works across namespaces. A host is cut off by setting the switch end
of its veth down: to the host that looks like a pulled cable (no carrier),
while its own address still works locally, so it can still talk to its own
etcd member, which is then a minority of one.

Processes that outlive a daemon on purpose (the detached etcd member, the
fence guard, QEMU) are found by their command line, which always names the
host's data directory. The cleanups remove everything even when the test
fails: VMs (through the API while the cluster still answers), daemons,
then every process whose command line names the test directory, then the
namespaces.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import nc
import nc_migrate as M
from nc import fail

API_PORT = M.API_PORT
FORM_TIMEOUT_S = 120  # one init or join, including the re-exec
PLACE_TIMEOUT_S = 90  # create -> the VM runs on its node (TCG boot included)
DIRECT = {"X-Novacron-Direct": "1"}  # answer about this node only, never forward


def have(binary):
    return shutil.which(binary) is not None


# ---- the network ------------------------------------------------------------

class Switch:
    """Three host namespaces and a switch namespace with a bridge. Names
    carry the pid so parallel runs never collide (interface names are at
    most 15 characters)."""

    HOSTS = 3

    def __init__(self, tag="c"):
        pid = os.getpid()
        self.n = pid % 250 + 1
        p = pid % 100000
        t = tag[:1]
        self.sw = "nccl-%d-%s-sw" % (pid, tag)
        self.ns = ["nccl-%d-%s-h%d" % (pid, tag, i + 1) for i in range(self.HOSTS)]
        self.bridge = "ncbr%d%s" % (p, t)
        self.host_dev = ["nch%d%s%d" % (p, t, i + 1) for i in range(self.HOSTS)]
        self.sw_dev = ["ncs%d%s%d" % (p, t, i + 1) for i in range(self.HOSTS)]
        self.addr = ["10.79.%d.%d" % (self.n, i + 1) for i in range(self.HOSTS)]
        self.created = []

    def up(self):
        for ns in [self.sw] + self.ns:
            M.run("ip", "netns", "add", ns)
            self.created.append(ns)
        M.run("ip", "-n", self.sw, "link", "add", self.bridge, "type", "bridge")
        M.run("ip", "-n", self.sw, "link", "set", self.bridge, "up")
        M.run("ip", "-n", self.sw, "link", "set", "lo", "up")
        for i, ns in enumerate(self.ns):
            M.run("ip", "link", "add", self.host_dev[i], "netns", ns, "type", "veth",
                  "peer", "name", self.sw_dev[i], "netns", self.sw)
            M.run("ip", "-n", ns, "addr", "add", self.addr[i] + "/24", "dev", self.host_dev[i])
            M.run("ip", "-n", ns, "link", "set", "lo", "up")
            M.run("ip", "-n", ns, "link", "set", self.host_dev[i], "up")
            M.run("ip", "-n", self.sw, "link", "set", self.sw_dev[i], "master", self.bridge)
            M.run("ip", "-n", self.sw, "link", "set", self.sw_dev[i], "up")
        for i in range(1, self.HOSTS):
            self.wait_reach(0, i)
        self.wait_reach(1, 2)
        nc.log("switch %s: %s" % (self.sw, ", ".join("%s (%s)" % (ns, a)
                                                    for ns, a in zip(self.ns, self.addr))))
        return self

    def reach(self, i, j):
        return M.run("ip", "netns", "exec", self.ns[i], "ping", "-c", "1", "-W", "1",
                     self.addr[j], check=False).returncode == 0

    def wait_reach(self, i, j, timeout=10):
        nc.poll("%s to reach %s" % (self.ns[i], self.addr[j]), lambda: self.reach(i, j), timeout)

    def set_link(self, i, up):
        """Cuts (or restores) host i's cable: the switch end of its veth."""
        M.run("ip", "-n", self.sw, "link", "set", self.sw_dev[i], "up" if up else "down")
        nc.log("host %d (%s): cable %s" % (i + 1, self.addr[i], "plugged in" if up else "pulled"))

    def down(self):
        """Removes the namespaces (veths and bridge go with them); runs after
        every process in them is gone."""
        for ns in reversed(self.created):
            M.run("ip", "netns", "del", ns, check=False)
        self.created = []


# ---- a host -------------------------------------------------------------------

class Host(M.Node):
    """novacrond in host namespace ns, listening on ADDR:8470, with node
    name `name`; no --store and no token file, so it starts as a single
    node on SQLite until `cluster init` or `cluster join` turns it into a
    cluster member (the same process re-execs itself)."""

    def __init__(self, tmpdir, name, ns, addr, extra_args=()):
        self.name = name
        super().__init__(tmpdir, name, ns, addr, None, extra_args=extra_args)

    def start(self, timeout=30):
        if self.alive():
            fail("node %s: novacrond pid %d is already running" % (self.name, self.pid))
        argv = ["ip", "netns", "exec", self.ns, nc.NOVACROND, "--data-dir", self.data,
                "--listen", self.endpoint, "--accel", self.accel,
                "--node-name", self.name] + self.extra_args
        with open(self.log_path, "ab") as lf:
            lf.write(("---- %s\n" % " ".join(argv)).encode())
            lf.flush()
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf,
                                         preexec_fn=nc._die_with_parent)
        self.port = API_PORT
        nc.log("node %s: novacrond pid %d on %s (%s)" % (self.name, self.proc.pid,
                                                       self.endpoint, self.data))
        self.wait_ready(timeout)

    def wait_ready(self, timeout):
        def ready():
            if self.proc.poll() is not None:
                fail("node %s: novacrond exited with status %d:\n%s"
                     % (self.name, self.proc.returncode, self.log_tail()))
            try:
                return self.api.get("/readyz", timeout=5).status == 200
            except OSError:
                return False
        try:
            nc.poll("node %s to be ready" % self.name, ready, timeout, interval=0.2)
        except AssertionError as e:
            fail("%s\n--- novacrond log ---\n%s" % (e, self.log_tail()))

    # -- the CLI, as an operator on this host runs it --

    def cli(self, *args, timeout=120, check=True, json_out=False, global_args=()):
        """novacron --data-dir D [GLOBAL_ARGS] [-o json] ARGS; returns (rc,
        stdout, stderr), or the parsed stdout with json_out. check: fail
        unless the exit status is 0."""
        argv = [nc.CLI, "--data-dir", self.data] + list(global_args) \
            + (["-o", "json"] if json_out else []) + list(args)
        t = time.monotonic()
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        nc.log("node %s: novacron %s -> exit %d in %.1f s%s%s"
               % (self.name, " ".join(args), p.returncode, time.monotonic() - t,
                  ("\n  stdout: " + out.strip()[:800]) if out.strip() else "",
                  ("\n  stderr: " + err.strip()[:800]) if err.strip() else ""))
        if check and p.returncode != 0:
            fail("node %s: novacron %s: exit %d\n  stdout: %s\n  stderr: %s"
                 % (self.name, " ".join(args), p.returncode, out, err))
        if json_out and p.returncode == 0:
            try:
                return json.loads(out)
            except ValueError:
                fail("node %s: novacron -o json %s printed no JSON: %r"
                     % (self.name, " ".join(args), out))
        return p.returncode, out, err

    # -- cluster queries --

    def cluster(self, timeout=5):
        """GET /v1/cluster, or None when the daemon does not answer 200."""
        try:
            r = self.api.get("/v1/cluster", timeout=timeout)
        except OSError:
            return None
        return r.json if r.status == 200 else None

    def nodes(self):
        r = self.api.expect(200, "GET", "/v1/nodes")
        j = r.json
        return j["nodes"] if isinstance(j, dict) else j

    def node_row(self, name):
        for n in self.nodes():
            if n["name"] == name:
                return n
        fail("node %s: GET /v1/nodes has no node %r: %r" % (self.name, name, self.nodes()))

    def cluster_vms(self):
        """GET /v1/vms: every VM of the cluster, by name."""
        return {v["name"]: v for v in self.api.expect(200, "GET", "/v1/vms").json["vms"]}

    def vm_or_none(self, name, timeout=5):
        """This node's own record of the VM (never forwarded), None on 404."""
        r = self.api.get("/v1/vms/" + name, headers=DIRECT, timeout=timeout)
        if r.status == 404:
            return None
        if r.status != 200:
            fail("node %s: GET /v1/vms/%s (direct): %r" % (self.name, name, r))
        return r.json

    def explain(self, body):
        r = self.api.expect(200, "POST", "/v1/placement/explain", body)
        return r.json

    def create(self, name, start=True, memory="256M", expect=201, **fields):
        """POST /v1/vms in the cluster; returns the answer's JSON."""
        body = {"name": name, "image": nc.IMAGE, "memory": memory, "start": start}
        body.update(fields)
        r = self.api.request("POST", "/v1/vms", body, timeout=60)
        if r.status != expect:
            fail("node %s: create vm %s: expected HTTP %d, got %r" % (self.name, name, expect, r))
        nc.log("node %s: created vm %s: %s" % (self.name, name, r.text.strip()[:300]))
        return r.json

    # -- the processes of this host --

    def etcd_pids(self):
        return [p for p in nc.pids_whose_cmdline_contains(os.path.join(self.data, "etcd"))
                if os.path.basename((nc.cmdline(p) or [""])[0]) == "etcd"]

    def guard_pids(self):
        return [p for p in nc.pids_whose_cmdline_contains(os.path.join(self.data, "cluster"))
                if "--fence-guard" in nc.cmdline(p)]

    def crash(self):
        """kill -9 of everything the host runs: novacrond first (so it
        cannot restart its etcd member or guard), then the etcd member,
        the fence guard and the QEMUs. Returns the monotonic time of the
        first kill."""
        t = time.monotonic()
        pids = {"novacrond": [self.pid] if self.alive() else []}
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        pids["etcd"] = self.etcd_pids()
        pids["guard"] = self.guard_pids()
        pids["qemu"] = self.qemu_pids()
        for kind in ("etcd", "guard", "qemu"):
            for p in pids[kind]:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc is not None:
            self.proc.wait(10)
        for kind in ("etcd", "guard", "qemu"):
            for p in pids[kind]:
                nc.poll("%s pid %d of node %s to die" % (kind, p, self.name),
                        lambda: not nc.pid_alive(p), 10)
        nc.log("node %s: kill -9 of %r" % (self.name, pids))
        if not pids["etcd"]:
            fail("node %s: no etcd member process was running to kill" % self.name)
        return t

    def dump(self):
        out = ["--- node %s: novacrond log (%s) ---\n%s" % (self.name, self.log_path,
                                                             nc.tail(self.log_path, 120))]
        for rel, n in (("cluster/guard.log", 20), ("etcd/etcd.log", 25)):
            p = os.path.join(self.data, rel)
            out.append("--- node %s: %s ---\n%s" % (self.name, p, nc.tail(p, n)))
        vms_dir = os.path.join(self.data, "vms")
        for name in sorted(os.listdir(vms_dir)) if os.path.isdir(vms_dir) else []:
            for f, n in (("qemu.log", 10), ("serial.log", 8)):
                p = os.path.join(vms_dir, name, f)
                out.append("--- node %s: %s ---\n%s" % (self.name, p, nc.tail(p, n)))
        return "\n".join(out)


# ---- the two-copies watch, for a cluster ---------------------------------------

class ClusterWatch(M.Watch):
    """nc_migrate.Watch, with two changes for three hosts, some of which
    may be dead or cut off:

    - the serial logs are sampled on their own thread, and the per-node
      VM state and QEMUs on another, so a node whose API hangs cannot
      stall the sampling (a stall would hide two copies that overlap
      within it);
    - check(fresh_boot=True) is for HA restarts: the restarted guest boots
      from its image, so its seq starts again from 0 and only overlapping
      heartbeat spans (in host receive time) count as two copies."""

    def __init__(self, name, nodes):
        super().__init__(name, nodes)
        self.state_thread = threading.Thread(target=self._run_states, daemon=True)

    def start(self):
        super().start()
        self.state_thread.start()

    def stop(self):
        self.stopping.set()
        for t in (self.thread, self.state_thread):
            if t.is_alive():
                t.join(15)

    def _run(self):
        while not self.stopping.is_set():
            now = time.monotonic()
            with self.lock:
                for n in self.nodes:
                    self._read(n, now)
            self.stopping.wait(self.INTERVAL_S)

    def _run_states(self):
        while not self.stopping.is_set():
            for n in self.nodes:
                state = "?"
                try:
                    v = n.vm_or_none(self.name, timeout=2) if n.alive() else None
                    state = (v["state"] if v else "-") if n.alive() else "daemon dead"
                except Exception:  # daemon down, cut off or busy
                    state = "unreachable"
                pids = self._qemu_pids(n)
                with self.lock:
                    self.timeline.append((time.monotonic(), n.label, state, pids))
            self.stopping.wait(0.25)

    def _qemu_pids(self, node):
        """The QEMUs of node the integrity check counts: all of them (the
        tests that use this watch run one VM per node)."""
        return node.qemu_pids()

    def check(self, fresh_boot=False):
        if not fresh_boot:
            return super().check()
        self.sample_now()
        with self.lock:
            problems = list(self.errors)
            copies = [c for c in self.copies if c.hbs]
            for c in copies:
                seqs = [hb.seq for hb, _ in c.hbs]
                if any(b <= a for a, b in zip(seqs, seqs[1:])):
                    # one serial log whose seq went back: the guest rebooted in
                    # place, or two QEMUs wrote to one file
                    problems.append("%s: heartbeat seq went backwards: %r" % (c.label, seqs[-40:]))
            for i, x in enumerate(copies):
                for y in copies[i + 1:]:
                    (fx, lx), (fy, ly) = x.span(), y.span()
                    overlap = min(lx, ly) - max(fx, fy)
                    if overlap > self.OVERLAP_TOLERANCE_S:
                        problems.append("two copies ran at once for %.2f s: %s printed seq "
                                        "%d..%d and %s printed seq %d..%d"
                                        % (overlap, x.label, x.hbs[0][0].seq, x.hbs[-1][0].seq,
                                           y.label, y.hbs[0][0].seq, y.hbs[-1][0].seq))
            for t, label, state, pids in self.timeline:
                if len(pids) > 1:
                    problems.append("[%7.2f] node %s had %d QEMUs at once: %r"
                                    % (t - nc._T0, label, len(pids), pids))
                    break
            if problems:
                fail("two-copies/integrity check failed:\n  " + "\n  ".join(problems)
                     + "\n" + self.describe_locked())
            return sorted(copies, key=lambda c: c.hbs[0][1])

    def copies_on(self, node):
        with self.lock:
            return [c for c in self.copies if c.node is node and c.hbs]

    def first_heartbeat_after(self, t, exclude=None):
        """(copy, heartbeat, receive time) of the first heartbeat received
        after monotonic time t by a copy not on node exclude, or None."""
        self.sample_now()
        best = None
        with self.lock:
            for c in self.copies:
                if c.node is exclude:
                    continue
                for hb, rt in c.hbs:
                    if rt > t and (best is None or rt < best[2]):
                        best = (c, hb, rt)
                        break
        return best


class VMWatch(ClusterWatch):
    """ClusterWatch for a node that runs several VMs: the QEMUs it samples
    (and the check counts) are this VM's own, the ones whose command line
    names its run dir, rather than every QEMU of the node."""

    def _qemu_pids(self, node):
        return nc.qemu_pids_for(node.run_dir(self.name) + os.sep)


# ---- the test case ---------------------------------------------------------------

def skip_reason():
    """Why this machine cannot run the cluster tests, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for b in ("ip", "etcd", "ping"):
        if not have(b):
            return "%s is not installed (the cluster tests need it)" % b
    if not os.path.exists(nc.CLI):
        return "the CLI %s is not built" % nc.CLI
    return None


class ClusterCase(nc.TestCase):
    """Three hosts on a switch. setUp makes the network; form() starts the
    three daemons, registers the guest image on each and forms the cluster
    with `cluster init` and `cluster join`."""

    switch_tag = "c"

    def setUp(self):
        if M._terminated:
            self.skipTest("SIGTERM received earlier in this run")
        why = skip_reason()
        if why:
            self.skipTest(why)
        # Registered before nc.TestCase's own cleanup, so it runs after it.
        self.net = Switch(self.switch_tag)
        self.addCleanup(self.net.down)
        self.watches = []
        self.hosts = []
        super().setUp()
        self.net.up()

    # -- forming the cluster --

    def start_hosts(self, extra_args=()):
        for i in range(Switch.HOSTS):
            h = Host(self.tmp, "n%d" % (i + 1), self.net.ns[i], self.net.addr[i],
                     extra_args=extra_args)
            self.daemons.append(h)
            self.hosts.append(h)
        for h in self.hosts:
            h.register_image()
        return self.hosts

    def wait_clustered(self, h, t0):
        """Waits for h's daemon to come back from its re-exec as a member:
        same pid, GET /v1/cluster answers with its node name and a valid
        lease."""
        pid = h.pid
        last = {}

        def back():
            if h.proc.poll() is not None:
                fail("node %s: novacrond exited with status %d after the re-exec:\n%s"
                     % (h.name, h.proc.returncode, h.log_tail()))
            last["c"] = c = h.cluster()
            return c if c and c.get("node") == h.name and c.get("lease_valid") else None
        try:
            c = nc.poll("node %s to be back as a cluster member" % h.name, back,
                        FORM_TIMEOUT_S, interval=0.2)
        except AssertionError as e:
            fail("%s (last GET /v1/cluster: %r)\n--- novacrond log ---\n%s"
                 % (e, last.get("c"), h.log_tail()))
        nc.expect_eq("node %s: novacrond pid after the re-exec" % h.name, pid, h.pid)
        nc.log("node %s: a cluster member %.1f s after the command (controller %s)"
               % (h.name, time.monotonic() - t0, c.get("controller")))
        return c

    def init_cluster(self):
        """`novacron cluster init` on the first host; waits until its daemon
        is back as a member. Returns (and keeps in self.token) the cluster
        token init printed."""
        t0 = time.monotonic()
        first = self.hosts[0]
        out = first.cli("cluster", "init", "--address", first.addr, json_out=True,
                        timeout=FORM_TIMEOUT_S)
        token = out.get("token") if isinstance(out, dict) else None
        if not token:
            fail("cluster init -o json: no token in %r" % out)
        self.token = token
        self.wait_clustered(first, t0)
        return token

    def join(self, h, worker=False, through=None):
        """`novacron cluster join` on host h through host `through`'s API
        (default: the first host), with --worker when worker; waits until
        h's daemon is back as a member. Returns the command's stdout."""
        t = time.monotonic()
        through = through or self.hosts[0]
        args = ["cluster", "join", through.endpoint, "--token", self.token, "--address", h.addr]
        if worker:
            args.append("--worker")
        _, out, _ = h.cli(*args, timeout=FORM_TIMEOUT_S)
        self.wait_clustered(h, t)
        return out

    def form(self, workers=()):
        """init on the first host, join on the others (`workers`: names of
        hosts that join with --worker). Waits until every node holds a
        lease, one is the controller and every node lists the test image.
        Returns the time it took."""
        t0 = time.monotonic()
        self.init_cluster()
        for h in self.hosts[1:]:
            self.join(h, worker=h.name in workers)
        names = sorted(h.name for h in self.hosts)
        last = {}

        def formed():
            rows = last["rows"] = self.hosts[0].nodes()
            ready = sorted(r["name"] for r in rows if r["state"] == "ready")
            ctl = [r["name"] for r in rows if r.get("controller")]
            imgs = all(nc.IMAGE in (r.get("images") or []) for r in rows)
            return ready == names and len(ctl) == 1 and imgs
        try:
            nc.poll("3 ready nodes, one controller, every node with image %s" % nc.IMAGE,
                    formed, 60, interval=0.5)
        except AssertionError as e:
            fail("%s\nGET /v1/nodes: %s" % (e, json.dumps(last.get("rows"), indent=1)))
        took = time.monotonic() - t0
        nc.log("cluster formed in %.1f s: controller %s" % (took, self.controller_name()))
        return took

    # -- queries over the whole cluster --

    def host(self, name):
        for h in self.hosts:
            if h.name == name:
                return h
        fail("no host named %r" % name)

    def live(self, exclude=()):
        return [h for h in self.hosts if h.alive() and h not in exclude]

    def controller_name(self, via=None):
        for h in ([via] if via else self.live()):
            c = h.cluster()
            if c is not None:
                return c.get("controller")
        return None

    def where(self, name, via):
        """The node the cluster has the VM on (GET /v1/vms), or None."""
        v = via.cluster_vms().get(name)
        return v.get("node") if v else None

    def wait_runs_on(self, name, via, timeout=PLACE_TIMEOUT_S, not_on=()):
        """Waits until the cluster places the VM on a node (not in not_on)
        that runs it: its own record says running, and its serial log has
        a heartbeat. Returns (host, heartbeat)."""
        last = {}

        def runs():
            row = via.cluster_vms().get(name)
            last["row"] = row
            if not row or not row.get("node"):
                return None
            h = self.host(row["node"])
            if h in not_on or not h.alive():
                return None
            v = h.vm_or_none(name)
            last["local"] = v and {k: v.get(k) for k in ("state", "state_reason", "pid")}
            if not v or v["state"] != "running":
                return None
            hbs = h.serial(name).heartbeats()
            return (h, hbs[-1]) if hbs else None
        try:
            return nc.poll("vm %s to run on a node%s" % (
                name, (" other than " + ",".join(h.name for h in not_on)) if not_on else ""),
                runs, timeout, interval=0.25)
        except AssertionError as e:
            fail("%s; the cluster's row %r, the node's own record %r"
                 % (e, last.get("row"), last.get("local")))

    def expect_running_here(self, h, name):
        """h's own record of the VM says running (desired running), with a
        live QEMU of h's. Returns the record."""
        v = h.vm_or_none(name)
        if v is None:
            fail("node %s has no record of vm %s, which the cluster says it runs" % (h.name, name))
        nc.expect_eq("node %s: state of vm %s" % (h.name, name), "running", v["state"])
        nc.expect_eq("node %s: desired state of vm %s" % (h.name, name), "running",
                     v["desired_state"])
        if not v.get("pid") or not nc.pid_alive(v["pid"]):
            fail("node %s: vm %s's pid %r is not a live process" % (h.name, name, v.get("pid")))
        if v["pid"] not in h.qemu_pids():
            fail("node %s: vm %s's pid %d is not one of the node's QEMUs %r"
                 % (h.name, name, v["pid"], h.qemu_pids()))
        return v

    def expect_not_local(self, name, hosts):
        for h in hosts:
            v = h.vm_or_none(name)
            if v is not None:
                fail("node %s has its own record of vm %s (state %s), but the vm is not "
                     "placed there" % (h.name, name, v.get("state")))
            if os.path.exists(h.run_dir(name)):
                fail("node %s has a run dir for vm %s, but the vm is not placed there"
                     % (h.name, name))

    def watch(self, name, per_vm=False):
        """Starts a two-copies watch of the VM on every host; per_vm: count
        only the VM's own QEMUs (VMWatch), for hosts that run several VMs."""
        w = (VMWatch if per_vm else ClusterWatch)(name, self.hosts)
        self.watches.append(w)
        w.start()
        return w

    def etcdctl(self, *args, via=None, members=None):
        """Runs ETCDCTL_API=3 etcdctl ARGS in host via's namespace (default:
        the first host) against the etcd client URLs of the hosts in
        members (default: via's own member), the way an operator debugs
        the store (docs/cluster.md, Keys). Returns stdout; fails on a
        non-zero exit."""
        via = via or self.hosts[0]
        eps = ",".join("http://%s:2379" % h.addr for h in (members or [via]))
        p = subprocess.run(["ip", "netns", "exec", via.ns, "etcdctl", "--endpoints", eps,
                            "--dial-timeout", "3s", "--command-timeout", "5s"] + list(args),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30,
                           env=dict(os.environ, ETCDCTL_API="3"))
        out = p.stdout.decode(errors="replace")
        if p.returncode != 0:
            fail("etcdctl %s (endpoints %s): exit %d: %s" % (" ".join(args), eps, p.returncode,
                                                             p.stderr.decode(errors="replace")))
        return out

    def etcd_keys(self, prefix, **kw):
        """The keys under prefix in the cluster store, sorted."""
        out = self.etcdctl("get", "--prefix", "--keys-only", prefix, **kw)
        return sorted(k for k in out.splitlines() if k.strip())

    def etcd_json(self, key, **kw):
        """The JSON value of key in the cluster store, or None when absent."""
        out = self.etcdctl("get", "--print-value-only", key, **kw).strip()
        if not out:
            return None
        try:
            return json.loads(out)
        except ValueError:
            fail("etcd key %s does not hold JSON: %r" % (key, out[:300]))

    def etcd_members(self, **kw):
        """The etcd members as [(name, is_learner)], from member list."""
        j = json.loads(self.etcdctl("member", "list", "-w", "json", **kw))
        return sorted((m.get("name", ""), bool(m.get("isLearner"))) for m in j.get("members", []))

    # -- cleanup --

    def _dump(self):
        out = ["", "=" * 30 + " diagnostics for %s " % self.id() + "=" * 30]
        for h in self.live():
            try:
                r = h.api.get("/v1/cluster", timeout=3)
                out.append("--- GET /v1/cluster on %s ---\n%s" % (h.name, r.text[:3000]))
                r = h.api.get("/v1/vms", timeout=3)
                out.append("--- GET /v1/vms on %s ---\n%s" % (h.name, r.text[:3000]))
                break
            except Exception as e:
                out.append("--- %s does not answer: %r" % (h.name, e))
        for w in self.watches:
            try:
                out.append("--- watch of %s ---\n%s" % (w.name, w.describe()))
            except Exception as e:
                out.append("--- watch of %s: %r" % (w.name, e))
        for h in self.hosts:
            out.append(h.dump())
        sys.stderr.write("\n".join(out) + "\n")

    def _cleanup(self):
        """Everything goes, even after a failure: VMs through the API while
        the cluster answers (bounded), then every daemon (SIGTERM to all of
        them at once, so no controller reacts to another's exit, then
        SIGKILL), then every process whose command line names the test
        directory (QEMU, etcd members, fence guards)."""
        for w in self.watches:
            w.stop()
        if self._failed():
            self._dump()
        for hp in self.helpers:
            if hp.poll() is None:
                hp.kill()
                hp.wait(10)
        deadline = time.monotonic() + 45
        try:
            via = next((h for h in self.live() if h.cluster(timeout=3)), None)
            if via is not None:
                vms = via.api.expect(200, "GET", "/v1/vms", timeout=10).json["vms"]
                ops = []
                for v in vms:
                    if time.monotonic() > deadline:
                        break
                    r = via.api.delete("/v1/vms/" + v["name"], timeout=10)
                    if r.status == 202:
                        ops.append(r.json["operation"])
                for op in ops:
                    left = deadline - time.monotonic()
                    if left <= 1:
                        break
                    via.wait_op(op, timeout=left)
        except Exception as e:  # keep cleaning up
            nc.log("cleanup: deleting VMs failed: %r" % e)
        for h in self.daemons:
            if h.alive():
                h.proc.send_signal(signal.SIGTERM)
        for h in self.daemons:
            if h.proc is None:
                continue
            try:
                h.proc.wait(20)
            except subprocess.TimeoutExpired:
                nc.log("cleanup: novacrond pid %d ignored SIGTERM for 20 s; killing it" % h.pid)
                h.proc.kill()
                h.proc.wait(10)
        for _ in range(3):
            left = nc.pids_whose_cmdline_contains(self.tmp)
            if not left:
                break
            for pid in left:
                nc.log("cleanup: killing %d %r" % (pid, nc.cmdline(pid)[:2]))
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for pid in left:
                try:
                    nc.wait_gone(pid, 10)
                except AssertionError as e:
                    nc.log("cleanup: %s" % e)
        if os.environ.get("NC_E2E_KEEP") == "1":
            nc.log("keeping %s" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
