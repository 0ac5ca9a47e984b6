#!/usr/bin/python3
"""Draining a host of a three-host cluster moves its VM by live migration.

A VM pinned to a host X that is not the controller runs a workload that
dirties memory and checks every page. `novacron node drain X`, run on
another host, waits until the drain is complete. Then:

  - the command succeeded and said the node is drained;
  - the node list shows X drained (draining or cordoned: not ready for new
    VMs), drain state "complete", 0 VMs; the
    cluster's VM list has the VM on another host Y;
  - Y runs it (its own record, its one QEMU, heartbeats), and the guest
    went on where it was: its first heartbeat on Y continues the seq of
    the last one on X (a live migration, not a reboot: no NCREADY on Y,
    every page still checks out), and Y's history says it migrated in;
  - X has no record, no QEMU and no files of the VM left;
  - throughout, the watch on all three hosts saw never two running
    copies."""

import time

import nc
import nc_cluster as C
import nc_migrate as M
from nc import expect_eq, fail

NAME = "d-1"
WORKLOAD = "nc.dirty_mib=16 nc.rate_mib=5"
DRAIN_TIMEOUT_S = 180


class ClusterDrain(C.ClusterCase):
    switch_tag = "d"

    def test_cluster_drain(self):
        n1, n2, n3 = self.start_hosts()
        self.form()
        ctl = self.controller_name()
        x = [h for h in self.hosts if h.name != ctl][0]
        via = [h for h in self.hosts if h is not x][0]
        ans = via.create(NAME, node=x.name, cmdline_append=WORKLOAD)
        expect_eq("create %s pinned to %s: node" % (NAME, x.name), x.name, ans["node"])
        h, _ = self.wait_runs_on(NAME, via)
        expect_eq("node running %s" % NAME, x.name, h.name)
        src_vm = x.vm_or_none(NAME)
        M.wait_new_heartbeats(x, NAME, 10)
        w = self.watch(NAME)
        time.sleep(1.0)

        t0 = time.monotonic()
        rc, out, err = via.cli("node", "drain", x.name, timeout=DRAIN_TIMEOUT_S + 30,
                               check=False, global_args=("--timeout", str(DRAIN_TIMEOUT_S)))
        took = time.monotonic() - t0
        expect_eq("exit status of `novacron node drain %s`" % x.name, 0, rc,
                  "stdout: %s stderr: %s" % (out, err))
        if "drained" not in out:
            fail("`novacron node drain %s` succeeded but does not say it drained: %r"
                 % (x.name, out))
        time.sleep(1.5)  # let every log run on, so two copies would show as such
        w.check()

        row = via.node_row(x.name)
        nc.log("node list row of %s after the drain: state %s, vms %s, drain %r"
               % (x.name, row["state"], row["vms"], row.get("drain")))
        expect_eq("drain state of %s" % x.name, "complete", (row.get("drain") or {}).get("state"),
                  "row: %r" % row)
        expect_eq("VMs on %s in the node list" % x.name, 0, row["vms"])
        if row["state"] not in ("draining", "cordoned"):
            fail("a drained node must take no new VMs until uncordoned, but the node list "
                 "says %s is %r" % (x.name, row["state"]))
        on = self.where(NAME, via)
        if on is None or on == x.name:
            fail("after the drain the cluster has %s on %r" % (NAME, on))
        y = self.host(on)
        for h in self.hosts:
            left = [n for n, v in h.cluster_vms().items() if v["node"] == x.name]
            expect_eq("VMs the cluster lists on %s (asked %s)" % (x.name, h.name), [], left)

        # Y runs it, and the guest went on where it was.
        v, _ = M.expect_runs_here(y, NAME)
        for key in ("vcpus", "memory", "image", "cmdline_append"):
            expect_eq("%s on %s (as on %s)" % (key, y.name, x.name), src_vm[key], v[key])
        sw = w.switch(x, y, after=t0)
        if not 1 <= sw.first_dst.seq - sw.last_src.seq <= 2:
            fail("the guest on %s started at seq %d but the last on %s was seq %d: it did not "
                 "continue where it was (a seq near 0 means a fresh boot)\n%s"
                 % (y.name, sw.first_dst.seq, x.name, sw.last_src.seq, w.describe()))
        serial = y.serial(NAME)
        if b"NCREADY" in serial.read():
            fail("node %s: the guest printed NCREADY: it booted there instead of moving" % y.name)
        nc.expect_increasing("heartbeats on %s" % y.name, serial.heartbeats(), step=1)
        reasons = [e.get("reason") or "" for e in v.get("history", [])]
        if not any("migrat" in r for r in reasons):
            fail("%s's history of %s does not say it migrated in: %r"
                 % (y.name, NAME, v.get("history")))

        # X is empty.
        M.expect_gone(x, NAME)
        M.expect_no_qemu(x)
        if src_vm["pid"] and nc.pid_alive(src_vm["pid"]):
            fail("node %s: the source QEMU pid %d still runs after the drain"
                 % (x.name, src_vm["pid"]))
        M.wait_new_heartbeats(y, NAME, 10)
        w.check()
        expect_eq("running copies", [y.name], [c.node.label for c in w.running_copies()])
        nc.log("DRAIN of %s: %s moved to %s in %.1f s (command to completion); heartbeat seq %d "
               "on %s then %d on %s; gap %d ms in the guest's t_ms, %.0f ms host receive "
               "times; largest gap around the switch %d ms"
               % (x.name, NAME, y.name, took, sw.last_src.seq, x.name, sw.first_dst.seq,
                  y.name, sw.first_dst.t_ms - sw.last_src.t_ms,
                  (sw.t_first - sw.t_last) * 1000, sw.max_gap_ms))


if __name__ == "__main__":
    nc.main()
