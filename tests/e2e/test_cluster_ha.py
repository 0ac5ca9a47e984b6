#!/usr/bin/python3
"""HA VMs of a three-host cluster when their host dies or is cut off.

An HA VM is pinned to a host X that is not the controller; a watch samples
the guest's serial log on all three hosts every 50 ms. Local disks are not
shared, so an HA restart boots the guest afresh on another host from the
image: its heartbeat seq starts again, and "two copies" means two serial
logs that produce heartbeats at the same time.

  (kill) kill -9 of X's novacrond, its etcd member, its fence guard and
      its QEMU: the VM runs (heartbeats) on another host within 30 s of
      the kill; the cluster lists it there, running, and X as dead. Then X's
      novacrond starts again: X rejoins, drops its stale record of the VM
      and starts no second copy.
  (partition) X's cable is pulled (its veth's switch end goes down), with
      everything on X still running: X's fence guard kills the guest there
      before it starts anywhere else (the last heartbeat on X is received
      before the first one elsewhere), it runs elsewhere within 30 s, and
      X does not restart it on its own while cut off. With the cable back,
      X rejoins (lease valid, ready in the node list), deletes its stale
      local copy (record, QEMU, files) and exactly one copy runs: the one
      on the other host, which runs on through the heal (same QEMU, no
      pause in its heartbeats). While
      cut off, X must answer GET /v1/cluster and GET /v1/vms within 15 s
      (the CLI gives up at 30 s) and not present an empty cluster as the
      truth; that is checked last, so the HA results come first."""

import os
import threading
import time

import nc
import nc_cluster as C
import nc_migrate as M
from nc import expect_eq, fail

RESTART_BOUND_S = 30  # fault -> heartbeats from the restarted copy
CUT_OFF_ANSWER_S = 15  # a cut-off node answers cluster reads within this


class CutOffProbe:
    """GET path on a cut-off node, on a thread: how long the answer took
    and what it said. A node that cannot reach a majority must say so
    (an error, or lease_valid false) in reasonable time, not block past the
    CLI's own timeout, and not present an empty cluster as the truth."""

    def __init__(self, node, path):
        self.node, self.path = node, path
        self.took, self.answer = None, None
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        t = time.monotonic()
        try:
            self.answer = self.node.api.get(self.path, timeout=CUT_OFF_ANSWER_S)
        except Exception as e:  # a socket timeout: no answer in time
            self.answer = e
        self.took = time.monotonic() - t

    def problem(self, what_empty):
        self.t.join(CUT_OFF_ANSWER_S + 10)
        a = self.answer
        nc.log("cut-off node %s: GET %s -> %.1f s: %r" % (self.node.name, self.path,
                                                          self.took or -1, a))
        if not isinstance(a, nc.Response):
            return ("GET %s on the cut-off node %s gave no answer within %d s (%r); `novacron` "
                    "there would time out" % (self.path, self.node.name, CUT_OFF_ANSWER_S, a))
        if a.status == 200 and what_empty(a.json):
            return ("GET %s on the cut-off node %s answered 200 after %.1f s with an empty "
                    "cluster, as if it had no nodes or VMs: %s"
                    % (self.path, self.node.name, self.took, a.text.strip()[:300]))
        return None


class ClusterHA(C.ClusterCase):
    switch_tag = "h"

    def ha_vm(self, name):
        """Forms the cluster and runs HA VM name on a host that is not the
        controller. Returns (x, via, the VM on x, the watch)."""
        self.start_hosts()
        self.form()
        ctl = self.controller_name()
        x = [h for h in self.hosts if h.name != ctl][-1]
        via = self.host(ctl)
        ans = via.create(name, node=x.name, ha=True)
        expect_eq("create %s pinned to %s: node" % (name, x.name), x.name, ans["node"])
        h, _ = self.wait_runs_on(name, via)
        expect_eq("node running %s" % name, x.name, h.name)
        row = via.cluster_vms()[name]
        if not row.get("ha"):
            fail("the cluster's row of %s does not say ha: %r" % (name, row))
        M.wait_new_heartbeats(x, name, 10)
        vm = x.vm_or_none(name)
        w = self.watch(name)
        time.sleep(1.0)
        return x, via, vm, w

    def await_restart(self, w, x, t_fault, what):
        """Waits for the first heartbeat of a copy on another host after
        t_fault; fails past RESTART_BOUND_S (measured from the fault, in
        host receive time). Returns (host, seconds)."""
        first = nc.poll("vm %s to print heartbeats on another host after %s" % (w.name, what),
                        lambda: w.first_heartbeat_after(t_fault, exclude=x),
                        RESTART_BOUND_S + 60, interval=0.2)
        copy, hb, t = first
        dt = t - t_fault
        nc.log("HA: vm %s printed heartbeat seq %d on %s %.1f s after %s"
               % (w.name, hb.seq, copy.node.name, dt, what))
        if dt > RESTART_BOUND_S:
            fail("vm %s ran again on %s only %.1f s after %s (bound %d s)\n%s"
                 % (w.name, copy.node.name, dt, what, RESTART_BOUND_S, w.describe()))
        return copy.node, dt, t

    def expect_cluster_has(self, name, y, via, dead=None):
        """The cluster's VM list has name on y, running; dead (if given)
        is dead in the node list."""
        last = {}

        def ok():
            row = last["row"] = via.cluster_vms().get(name)
            return row and row.get("node") == y.name and row.get("state") == "running"
        try:
            nc.poll("the cluster to list %s on %s, running" % (name, y.name), ok, 30,
                    interval=0.25)
        except AssertionError as e:
            fail("%s; row %r" % (e, last.get("row")))
        if dead is not None:
            expect_eq("state of %s in the node list (asked %s)" % (dead.name, via.name), "dead",
                      via.node_row(dead.name)["state"])

    def test_cluster_ha_kill(self):
        name = "ha-k"
        x, via, vm, w = self.ha_vm(name)
        t_kill = x.crash()
        y, dt, _ = self.await_restart(w, x, t_kill, "the kill of " + x.name)
        if y is x:
            fail("the restarted copy is on the dead host %s" % x.name)
        v, _ = M.expect_runs_here(y, name)
        self.expect_cluster_has(name, y, via, dead=x)
        if b"NCREADY" not in y.serial(name).read():
            fail("node %s: the restarted guest never printed NCREADY (it cannot have come "
                 "from anywhere but a fresh boot: disks are local)" % y.name)
        for c in w.copies_on(x):
            if c.hbs[-1][1] > t_kill + 0.25:
                fail("a heartbeat on the killed host %s was received %.2f s after the kill"
                     % (x.name, c.hbs[-1][1] - t_kill))
        time.sleep(2)
        w.check(fresh_boot=True)
        running = [c.node.name for c in w.running_copies()]
        expect_eq("running copies", [y.name], running)
        print("HA KILL: %s ran again on %s %.1f s after kill -9 of %s (novacrond, etcd, guard, "
              "QEMU)" % (name, y.name, dt, x.name), flush=True)

        # X comes back (as after a reboot: novacrond starts its etcd member
        # again from member.json): it rejoins, drops its stale record of the
        # VM and does not start a second copy.
        t_back = time.monotonic()
        x.start(timeout=60)
        nc.poll("%s to be ready again in the node list" % x.name,
                lambda: via.node_row(x.name)["state"] == "ready", 60, interval=0.25)
        expect_eq("%s's etcd member processes after its restart" % x.name, 1,
                  len(x.etcd_pids()))
        M.expect_gone(x, name, timeout=60)
        nc.log("%s rejoined and dropped its stale %s %.1f s after its restart"
               % (x.name, name, time.monotonic() - t_back))
        M.expect_no_qemu(x)
        M.wait_new_heartbeats(y, name, 10)
        w.check(fresh_boot=True)
        expect_eq("running copies after %s came back" % x.name, [y.name],
                  [c.node.name for c in w.running_copies()])
        self.expect_cluster_has(name, y, via)

    def test_cluster_ha_partition(self):
        name = "ha-p"
        x, via, vm, w = self.ha_vm(name)
        ix = self.hosts.index(x)
        t_cut = time.monotonic()
        self.net.set_link(ix, False)
        y, dt, t_first = self.await_restart(w, x, t_cut, "pulling %s's cable" % x.name)
        if y is x:
            fail("the restarted copy is on the cut-off host %s" % x.name)

        # Fenced on X before it started on Y.
        xs = w.copies_on(x)
        if not xs:
            fail("the watch never saw the copy on %s\n%s" % (x.name, w.describe()))
        t_last_x = max(c.hbs[-1][1] for c in xs)
        nc.log("last heartbeat on %s received %.2f s after the cut; first on %s %.2f s after "
               "the cut (%.2f s later)" % (x.name, t_last_x - t_cut, y.name, t_first - t_cut,
                                          t_first - t_last_x))
        if t_last_x >= t_first:
            fail("the copy on %s still printed heartbeats (last received %.2f s after the cut) "
                 "when the copy on %s began (%.2f s after the cut): two copies ran at once\n%s"
                 % (x.name, t_last_x - t_cut, y.name, t_first - t_cut, w.describe()))
        if nc.pid_alive(vm["pid"]):
            fail("node %s: the QEMU of %s (pid %d) still runs after the vm started on %s"
                 % (x.name, name, vm["pid"], y.name))
        guard_log = nc.tail(os.path.join(x.data, "cluster", "guard.log"), 50)
        if str(vm["pid"]) not in guard_log and name not in guard_log:
            fail("node %s: the fence guard's log does not mention fencing %s (pid %d):\n%s"
                 % (x.name, name, vm["pid"], guard_log))
        nc.log("node %s while cut off: its own record of %s: %r"
               % (x.name, name, (x.vm_or_none(name) or {}).get("state")))
        v, _ = M.expect_runs_here(y, name)
        self.expect_cluster_has(name, y, via, dead=x)
        # Cut off a while longer: X must not bring its copy back on its own.
        time.sleep(3)
        w.check(fresh_boot=True)
        expect_eq("QEMUs on the cut-off host %s" % x.name, [], x.qemu_pids())

        # The cable goes back: X rejoins and drops its stale copy.
        t_heal = time.monotonic()
        self.net.set_link(ix, True)
        last = {}

        def rejoined():
            st = last["st"] = x.cluster()
            try:
                row = last["row"] = via.node_row(x.name)
            except AssertionError as e:  # via itself may answer 503 for a moment
                last["row"] = str(e)
                return None
            return st and st.get("lease_valid") and row["state"] == "ready"
        try:
            nc.poll("%s to rejoin (lease valid, ready)" % x.name, rejoined, 60, interval=0.25)
        except AssertionError as e:
            fail("%s; its GET /v1/cluster %r, node list row %r" % (e, last.get("st"),
                                                                   last.get("row")))
        nc.log("%s rejoined %.1f s after the cable went back" % (x.name,
                                                                 time.monotonic() - t_heal))
        M.expect_gone(x, name, timeout=60)
        nc.log("%s deleted its stale copy of %s %.1f s after the cable went back"
               % (x.name, name, time.monotonic() - t_heal))
        M.expect_no_qemu(x)
        # The copy on Y runs on through the heal: let 10 s pass since the
        # cable went back (more than the fence bound), then its QEMU is the
        # same and its heartbeats never paused.
        time.sleep(max(0.0, 10 - (time.monotonic() - t_heal)))
        M.wait_new_heartbeats(y, name, 10)
        w.check(fresh_boot=True)
        ys = w.copies_on(y)
        hbs = [(hb, t) for c in ys for hb, t in c.hbs if t >= t_heal - 1]
        gaps = [b[1] - a[1] for a, b in zip(hbs, hbs[1:])]
        worst = max(gaps) if gaps else None
        nc.log("copy on %s after the heal: %d heartbeats, seq %s..%s, largest gap %.2f s; "
               "copies on %s so far: %d" % (y.name, len(hbs), hbs and hbs[0][0].seq,
                                            hbs and hbs[-1][0].seq, worst or -1, y.name,
                                            len(ys)))
        if len(ys) != 1 or worst is None or worst > 1.5 or not nc.pid_alive(v["pid"]):
            fail("the copy of %s on %s did not run on through the heal: QEMU pid %d %s, %d "
                 "copies there, largest heartbeat gap since the heal %s s (the healthy side "
                 "must not lose its lease when the cut-off member comes back)\n%s\n--- %s's "
                 "fence guard ---\n%s"
                 % (name, y.name, v["pid"], "alive" if nc.pid_alive(v["pid"]) else "dead",
                    len(ys), worst, w.describe(), y.name,
                    nc.tail(os.path.join(y.data, "cluster", "guard.log"), 5)))
        expect_eq("running copies after the heal", [y.name],
                  [c.node.name for c in w.running_copies()])
        self.expect_cluster_has(name, y, x)
        print("HA PARTITION: %s fenced on %s %.1f s after the cut, ran on %s %.1f s after the "
              "cut (%.1f s after the fence); %s rejoined and dropped its copy"
              % (name, x.name, t_last_x - t_cut, y.name, dt, t_first - t_last_x, x.name),
              flush=True)

    def test_cluster_cut_off_reads(self):
        """What a cut-off node tells its operator. The cluster has a VM (defined,
        not started) on another host; X's cable is pulled and its lease
        expires. Then, on X, GET /v1/cluster and GET /v1/vms must answer
        within 15 s, and neither may present an empty cluster as the truth
        (an error, or lease_valid false with what it last knew, is fine);
        `novacron cluster status` there must finish before its own 30 s
        timeout. With the cable back, X reads the real cluster again."""
        self.start_hosts()
        self.form()
        ctl = self.controller_name()
        x = [h for h in self.hosts if h.name != ctl][-1]
        via = self.host(ctl)
        via.create("cut-1", start=False, node=via.name)
        nc.poll("cut-1 to be listed on %s" % x.name, lambda: "cut-1" in x.cluster_vms(), 30)
        self.net.set_link(self.hosts.index(x), False)
        nc.poll("%s to be dead on the majority side" % x.name,
                lambda: via.node_row(x.name)["state"] == "dead", 30, interval=0.25)
        probes = [(CutOffProbe(x, "/v1/cluster"),
                   lambda j: not j.get("nodes") and not j.get("lease_valid")),
                  (CutOffProbe(x, "/v1/vms"), lambda j: not j.get("vms"))]
        problems = [p for p in (pr.problem(empty) for pr, empty in probes) if p]
        st = probes[0][0].answer
        if isinstance(st, nc.Response) and st.status == 200 and st.json.get("lease_valid"):
            problems.append("GET /v1/cluster on the cut-off node %s says its lease is valid: %r"
                            % (x.name, st))
        t = time.monotonic()
        rc, out, err = x.cli("cluster", "status", check=False, timeout=90)
        took = time.monotonic() - t
        if took > 30 or (rc == 0 and "0 of 0" in out):
            problems.append("`novacron cluster status` on the cut-off node %s: exit %d after "
                            "%.1f s: %s%s" % (x.name, rc, took, out.strip()[:300],
                                              err.strip()[:300]))
        self.net.set_link(self.hosts.index(x), True)
        nc.poll("%s to read the real cluster again" % x.name,
                lambda: (lambda c: c and c.get("lease_valid") and c.get("nodes_alive") == 3)(
                    x.cluster()), 60, interval=0.25)
        expect_eq("vms %s lists after the heal" % x.name, ["cut-1"], sorted(x.cluster_vms()))
        if problems:
            fail("the cut-off node misreports the cluster:\n  " + "\n  ".join(problems))


if __name__ == "__main__":
    nc.main()
