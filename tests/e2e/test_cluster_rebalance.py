#!/usr/bin/python3
"""The rebalancer of a three-host cluster evens out load by live migration,
then leaves the VMs alone.

Every host runs with `rebalance = on` and a threshold between one and two
VMs' worth of load (20 % on a 2-CPU machine, where a 1-vCPU VM is 1/8 of a
node: 2 CPUs x cpu_ratio 4). Two VMs are created while the other two hosts
are cordoned, so both land on one host S; then the two are uncordoned, and
the gap between S and the empty hosts is two VMs, above the threshold.
Then:

  - the controller starts no move before the gap has stood for 10 s
    (docs/cluster.md), and starts one within a bound after that;
  - it moves one VM to a host D that was empty, by live migration: D runs
    it (its record, one QEMU), the guest went on where it was (its first
    heartbeat on D continues the seq of its last on S, no NCREADY, every
    page still checks out, heartbeats go on), D's history says it migrated
    in, and S has no record, QEMU or files of it left;
  - the other VM runs on S as before (same QEMU, heartbeats);
  - each VM exists exactly once: one node has a record of it, one QEMU
    runs it, every host's GET /v1/vms lists both on their nodes, and the
    etcd store records the moved VM on D (/cluster/vms/<vm> and
    /nodes/D/nc/vms/<vm>, none left under /nodes/S/);
  - the gap, from GET /v1/nodes, is now below the threshold;
  - hysteresis: from the move on, through the 60 s cooldown plus 10 s of
    sustain and a margin (so a controller that moved again whenever it
    could would be caught), no VM moves: same nodes, same QEMUs, no new
    copy of either guest, one rebalance decision in the controllers' logs;
  - throughout, the watch on all three hosts saw never two running copies
    of either VM."""

import os
import time

import nc
import nc_cluster as C
import nc_migrate as M
from nc import expect_eq, fail

NAMES = ("rb-1", "rb-2")
MEMORY, MEMORY_BYTES = "256M", 256 << 20
# docs/cluster.md: the gap must stay above the threshold for 10 s, and
# after a move the controller waits 60 s before the next one.
SUSTAIN_S = 10
COOLDOWN_S = 60
# docs/scheduling.md: a host offers CPUs x cpu_ratio vCPUs, memory x mem_ratio.
CPU_RATIO, MEM_RATIO = 4.0, 1.0
MOVE_START_BOUND_S = SUSTAIN_S + 30  # uncordon -> a migration under way
MOVE_DONE_BOUND_S = 120  # migration under way -> done (TCG, TLS over a veth)
QUIET_MARGIN_S = 8


def host_vm_load():
    """The load one 1-vCPU VM of MEMORY puts on a host of this machine,
    as the rebalancer computes it (src/cluster/rebalance.h)."""
    cpus = os.sysconf("SC_NPROCESSORS_ONLN")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1 / (cpus * CPU_RATIO), MEMORY_BYTES / (mem * MEM_RATIO))


def threshold_pct():
    """A whole percentage strictly between one VM's load and two: one move
    then balances two VMs on one host, and two VMs there are over it."""
    u = host_vm_load() * 100
    t = int(u * 1.6)
    return t if 5 <= t <= 100 and u < t < 2 * u else None


def load(row):
    cap, alloc = row["capacity"], row["allocated"]
    return max(alloc["vcpus"] / (cap["vcpus"] * CPU_RATIO),
               alloc["memory_bytes"] / (cap["memory_bytes"] * MEM_RATIO))


def gap(rows):
    loads = [load(r) for r in rows]
    return max(loads) - min(loads)


def describe(rows):
    return ", ".join("%s %s %.3f (%d vCPU, %d VMs)" % (r["name"], r["state"], load(r),
                                                      r["allocated"]["vcpus"], r["vms"])
                     for r in sorted(rows, key=lambda r: r["name"]))


def copies_seen(watch):
    """How many copies of its guest the watch has seen print heartbeats."""
    watch.sample_now()
    with watch.lock:
        return len([c for c in watch.copies if c.hbs])


class ClusterRebalance(C.ClusterCase):
    switch_tag = "r"

    def setUp(self):
        super().setUp()
        self.threshold = threshold_pct()
        if self.threshold is None:
            self.skipTest("one VM's load on this machine (%.1f %%) leaves no threshold "
                          "from 5 to 100 %% between one VM and two" % (host_vm_load() * 100))

    def vm_records(self, name):
        """{host name: its own record} for every host that has one."""
        out = {}
        for h in self.hosts:
            v = h.vm_or_none(name)
            if v is not None:
                out[h.name] = v
        return out

    def vm_qemus(self, name):
        """{host name: [QEMU pids of the VM]} for every host running one."""
        out = {}
        for h in self.hosts:
            pids = nc.qemu_pids_for(h.run_dir(name) + os.sep)
            if pids:
                out[h.name] = pids
        return out

    def rebalance_moves_logged(self):
        """The controllers' "rebalance: live-migrating" lines, all hosts."""
        lines = []
        for h in self.hosts:
            with open(h.log_path, "rb") as f:
                for line in f.read().decode(errors="replace").splitlines():
                    if "rebalance: live-migrating" in line:
                        lines.append("%s: %s" % (h.name, line.strip()))
        return lines

    def test_cluster_rebalance(self):
        cfg = os.path.join(self.tmp, "novacrond.conf")
        with open(cfg, "w") as f:
            f.write("rebalance = on\nrebalance_threshold_pct = %d\n" % self.threshold)
        thr = self.threshold / 100
        self.start_hosts(extra_args=("--config", cfg))
        self.form()
        ctl = self.controller_name()
        src = [h for h in self.hosts if h.name != ctl][0]
        others = [h for h in self.hosts if h is not src]
        via = others[0]
        rows = via.nodes()
        u = host_vm_load()
        for r in rows:
            one = {"name": r["name"], "state": r["state"], "vms": 1,
                   "capacity": r["capacity"], "allocated": {"vcpus": 1,
                                                            "memory_bytes": MEMORY_BYTES}}
            if abs(load(one) - u) > 1e-6:
                fail("node %s: one VM's load from its capacity %r is %.4f, but the threshold "
                     "was chosen for %.4f" % (r["name"], r["capacity"], load(one), u))
        nc.log("threshold %d %%: one VM is %.1f %% of a node" % (self.threshold, u * 100))

        # ---- both VMs on src: the others cordoned while they are placed ----
        for o in others:
            via.cli("node", "cordon", o.name)
            expect_eq("state of %s after cordon" % o.name, "cordoned",
                      via.node_row(o.name)["state"])
        for name in NAMES:
            ans = via.create(name, memory=MEMORY)
            expect_eq("create %s with %s cordoned: node" % (name, " and ".join(
                o.name for o in others)), src.name, ans.get("node"), "answer: %r" % ans)
        pids = {}
        for name in NAMES:
            h, _ = self.wait_runs_on(name, via)
            expect_eq("node running %s" % name, src.name, h.name)
            pids[name] = self.expect_running_here(src, name)["pid"]
        for name in NAMES:
            M.wait_new_heartbeats(src, name, 5)
        watches = {name: self.watch(name, per_vm=True) for name in NAMES}
        rows = {r["name"]: r for r in via.nodes()}
        expect_eq("vCPUs allocated on %s" % src.name, 2, rows[src.name]["allocated"]["vcpus"],
                  describe(rows.values()))
        if not gap(rows.values()) > thr:
            fail("the test needs a gap above the threshold %.2f once all are ready, but it "
                 "would be %.3f: %s" % (thr, gap(rows.values()), describe(rows.values())))
        expect_eq("VMs in the cluster", {n: src.name for n in NAMES},
                  {k: v["node"] for k, v in via.cluster_vms().items()})
        time.sleep(1.0)  # every log runs a moment before the uncordon

        # ---- uncordon: the gap is two VMs ----
        t_uncordon = time.monotonic()
        for o in others:
            via.cli("node", "uncordon", o.name)
        rows = via.nodes()
        expect_eq("node states after the uncordon", {h.name: "ready" for h in self.hosts},
                  {r["name"]: r["state"] for r in rows})
        nc.log("uncordoned %s: %s (gap %.3f, threshold %.2f)"
               % (" and ".join(o.name for o in others), describe(rows), gap(rows), thr))

        # The move starts: a host other than src gets a record of a VM.
        last = {}

        def arriving():
            for o in others:
                for name in NAMES:
                    v = o.vm_or_none(name)
                    if v is not None:
                        return name, o, v["state"]
            last["rows"] = {k: v["node"] for k, v in via.cluster_vms().items()}
            return None
        try:
            moved, dst, state = nc.poll("a VM to start moving off %s" % src.name, arriving,
                                        MOVE_START_BOUND_S, interval=0.2)
        except AssertionError as e:
            fail("%s; the cluster's VMs: %r; the node list: %s"
                 % (e, last.get("rows"), describe(via.nodes())))
        t_start = time.monotonic()
        stay = [n for n in NAMES if n != moved][0]
        nc.log("%s is moving from %s to %s (its record there: %s), %.1f s after the uncordon"
               % (moved, src.name, dst.name, state, t_start - t_uncordon))
        if t_start - t_uncordon < SUSTAIN_S - 1.0:
            fail("the rebalancer moved %s %.1f s after the gap appeared; it must wait until "
                 "the gap stood for %d s" % (moved, t_start - t_uncordon, SUSTAIN_S))

        # ... and ends: the cluster has it on dst, dst runs it, src has none.
        def arrived():
            row = via.cluster_vms().get(moved)
            v = dst.vm_or_none(moved)
            last["arr"] = (row and row.get("node"), v and v.get("state"),
                           src.vm_or_none(moved) is not None)
            return (row and row.get("node") == dst.name and v and v["state"] == "running"
                    and src.vm_or_none(moved) is None)
        try:
            nc.poll("%s to run on %s and be gone from %s" % (moved, dst.name, src.name), arrived,
                    MOVE_DONE_BOUND_S, interval=0.25)
        except AssertionError as e:
            fail("%s; last (cluster node, state on %s, record on %s): %r"
                 % (e, dst.name, src.name, last.get("arr")))
        t_done = time.monotonic()
        nc.log("%s runs on %s, %.1f s after the move started" % (moved, dst.name,
                                                                t_done - t_start))
        time.sleep(1.5)  # let every log run on, so two copies would show as such
        for w in watches.values():
            w.check()

        # ---- the moved VM: on dst, the same guest, src clean ----
        w = watches[moved]
        v = self.expect_running_here(dst, moved)
        expect_eq("QEMUs of %s on %s" % (moved, dst.name), [v["pid"]],
                  nc.qemu_pids_for(dst.run_dir(moved) + os.sep))
        sw = w.switch(src, dst, after=t_uncordon)
        if not 1 <= sw.first_dst.seq - sw.last_src.seq <= 2:
            fail("the guest of %s on %s started at seq %d but the last on %s was seq %d: it "
                 "did not continue where it was (a seq near 0 means a fresh boot)\n%s"
                 % (moved, dst.name, sw.first_dst.seq, src.name, sw.last_src.seq, w.describe()))
        serial = dst.serial(moved)
        if b"NCREADY" in serial.read():
            fail("node %s: the guest of %s printed NCREADY: it booted there instead of moving"
                 % (dst.name, moved))
        nc.expect_increasing("heartbeats of %s on %s" % (moved, dst.name), serial.heartbeats(),
                             step=1)
        M.wait_new_heartbeats(dst, moved, 10)
        reasons = [e.get("reason") or "" for e in v.get("history", [])]
        if not any("migrat" in r for r in reasons):
            fail("%s's history of %s does not say it migrated in: %r"
                 % (dst.name, moved, v.get("history")))
        M.expect_gone(src, moved)
        if nc.pid_alive(pids[moved]):
            fail("node %s: the source QEMU pid %d of %s still runs after the move"
                 % (src.name, pids[moved], moved))

        # ---- the other VM: untouched on src ----
        v = self.expect_running_here(src, stay)
        expect_eq("QEMU pid of %s on %s (it did not move)" % (stay, src.name), pids[stay],
                  v["pid"])
        M.wait_new_heartbeats(src, stay, 5)

        # ---- exactly once each, in the cluster and in the store ----
        want = {moved: dst.name, stay: src.name}
        self.expect_once(want)
        pids = {moved: dst.vm_or_none(moved)["pid"], stay: pids[stay]}
        rec = self.etcd_json("/cluster/vms/" + moved)
        expect_eq("node of %s in etcd /cluster/vms/%s" % (moved, moved), dst.name,
                  rec and rec.get("node"), "record: %r" % rec)
        for h in self.hosts:
            keys = self.etcd_keys("/nodes/%s/nc/vms/" % h.name)
            names = sorted(k.rsplit("/", 1)[1] for k in keys)
            expect_eq("VM records in etcd under /nodes/%s/nc/vms/" % h.name,
                      sorted(n for n, on in want.items() if on == h.name), names)
        rows = via.nodes()
        if not gap(rows) < thr:
            fail("after the move the gap is %.3f, not below the threshold %.2f: %s"
                 % (gap(rows), thr, describe(rows)))
        nc.log("balanced: %s (gap %.3f < %.2f)" % (describe(rows), gap(rows), thr))

        # ---- hysteresis: nothing moves through cooldown + sustain ----
        quiet_until = t_start + COOLDOWN_S + SUSTAIN_S + QUIET_MARGIN_S
        copies = {n: copies_seen(watches[n]) for n in NAMES}
        expect_eq("copies of each guest seen so far (moved: src then dst; stayed: one)",
                  {moved: 2, stay: 1}, copies)
        nc.log("watching for %.0f s that nothing moves again" % (quiet_until - time.monotonic()))
        checks = 0
        while time.monotonic() < quiet_until:
            cl = {k: v["node"] for k, v in via.cluster_vms().items()}
            if cl != want:
                fail("%.1f s after the move started the cluster has %r, it had %r: the "
                     "rebalancer moved a VM again although the gap was below the threshold"
                     % (time.monotonic() - t_start, cl, want))
            for name in NAMES:
                recs = sorted(self.vm_records(name))
                if recs != [want[name]]:
                    fail("%.1f s after the move: hosts with a record of %s: %r, expected %r"
                         % (time.monotonic() - t_start, name, recs, [want[name]]))
                q = self.vm_qemus(name)
                if q != {want[name]: [pids[name]]}:
                    fail("%.1f s after the move: QEMUs of %s: %r, expected %r"
                         % (time.monotonic() - t_start, name, q, {want[name]: [pids[name]]}))
            checks += 1
            time.sleep(0.5)
        for name in NAMES:
            watches[name].check()
            now = copies_seen(watches[name])
            expect_eq("copies of %s after the quiet period" % name, copies[name], now,
                      watches[name].describe())
        M.wait_new_heartbeats(dst, moved, 5)
        M.wait_new_heartbeats(src, stay, 5)
        moves = self.rebalance_moves_logged()
        expect_eq("rebalance moves in the controllers' logs", 1, len(moves), "\n".join(moves))
        if moved not in moves[0] or dst.name not in moves[0]:
            fail("the logged rebalance move is not %s to %s: %s" % (moved, dst.name, moves[0]))
        self.expect_once(want)
        rows = via.nodes()
        print("REBALANCE: threshold %d %%; %s moved %s -> %s, started %.1f s after the "
              "uncordon, done %.1f s later; then %.0f s (%d checks) without a move; %s"
              % (self.threshold, moved, src.name, dst.name, t_start - t_uncordon,
                 t_done - t_start, time.monotonic() - t_start, checks, describe(rows)),
              flush=True)

    def expect_once(self, want):
        """Each VM of want ({vm: node}) exists exactly once: only its node
        has a record (running) and a QEMU of it, and every host's GET
        /v1/vms lists exactly these VMs on these nodes."""
        for name, node in want.items():
            expect_eq("hosts with a record of %s" % name, [node],
                      sorted(self.vm_records(name)))
            q = self.vm_qemus(name)
            if list(q) != [node] or len(q[node]) != 1:
                fail("%s must run in exactly one QEMU, on %s; QEMUs by host: %r"
                     % (name, node, q))
        for h in self.hosts:
            expect_eq("GET /v1/vms on %s: vm -> node" % h.name, want,
                      {k: v["node"] for k, v in h.cluster_vms().items()})


if __name__ == "__main__":
    nc.main()
