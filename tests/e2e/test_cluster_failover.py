#!/usr/bin/python3
"""The controller of a three-host cluster dies, and another takes over.

The host that GET /v1/cluster names as the controller is killed (kill -9
of its novacrond, its etcd member and its fence guard; it runs no VM).
Right after the kill, while no controller places anything, a VM is created
through a surviving host. Then:

  - within 15 s of the kill a surviving host is the controller, as every
    survivor's GET /v1/cluster says, and the node list shows the old
    controller dead;
  - the VM created in the gap is placed on a survivor and runs there
    (its own record, its QEMU, heartbeats);
  - a VM created after the takeover is placed and runs too, so the new
    controller keeps working rather than finishing one leftover;
  - the old controller's novacrond starts again: it rejoins as an
    ordinary node and the controller stays where it is."""

import threading
import time

import nc
import nc_cluster as C
import nc_migrate as M
from nc import expect_eq, fail

TAKEOVER_BOUND_S = 15


class ControllerWatch:
    """Asks every survivor's GET /v1/cluster every 0.2 s from the kill on,
    and keeps the first time all of them name the same new controller."""

    def __init__(self, survivors, old):
        self.survivors, self.old = survivors, old
        self.new, self.t_new, self.seen = None, None, []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set() and self.new is None:
            seen = []
            for h in self.survivors:
                st = h.cluster(timeout=3)
                seen.append(st and st.get("controller"))
            self.seen = seen
            if seen[0] and seen[0] != self.old and len(set(seen)) == 1:
                self.t_new, self.new = time.monotonic(), seen[0]
            self.stopping.wait(0.2)

    def stop(self):
        self.stopping.set()
        self.thread.join(10)


class ClusterFailover(C.ClusterCase):
    switch_tag = "f"

    def create_retrying(self, via, name, bound_s=20):
        """POST /v1/vms through via; a 503 while etcd elects a new leader is
        what a client retries. Returns the answer's JSON."""
        deadline = time.monotonic() + bound_s
        while True:
            self.t_submit = time.monotonic()
            r = via.api.request("POST", "/v1/vms", {"name": name, "image": nc.IMAGE,
                                                    "memory": "256M", "start": True},
                                timeout=60)
            if r.status == 201:
                nc.log("node %s: created vm %s: %s" % (via.name, name, r.text.strip()))
                return r.json
            if r.status != 503 or time.monotonic() > deadline:
                fail("node %s: create vm %s: expected HTTP 201, got %r" % (via.name, name, r))
            nc.log("node %s: create vm %s: 503 (%s); retrying" % (via.name, name,
                                                                 r.error.get("message")))
            time.sleep(0.5)

    def test_cluster_controller_failover(self):
        self.start_hosts()
        self.form()
        old = self.controller_name()
        if not old:
            fail("the formed cluster has no controller")
        c = self.host(old)
        survivors = [h for h in self.hosts if h is not c]
        via = survivors[0]
        nc.log("controller is %s; killing it" % old)
        t_kill = c.crash()
        cw = ControllerWatch(survivors, old)
        self.addCleanup(cw.stop)

        ans = self.create_retrying(via, "fo-1")
        t_created, t_submit = time.monotonic(), self.t_submit
        nc.log("fo-1 created %.1f s after the kill: %r" % (t_created - t_kill, ans))
        if ans.get("node") == old:
            fail("fo-1 was placed on the dead controller %s: %r" % (old, ans))
        try:
            nc.poll("a survivor to become the controller", lambda: cw.new,
                    TAKEOVER_BOUND_S + 45, interval=0.2)
        except AssertionError as e:
            fail("%s; the survivors name %r" % (e, cw.seen))
        new = cw.new
        took = cw.t_new - t_kill
        nc.log("new controller %s, %.1f s after the kill of %s; fo-1 was submitted last at "
               "%.1f s after the kill" % (new, took, old, t_submit - t_kill))
        if t_submit >= cw.t_new:
            nc.log("note: fo-1 was submitted after the takeover (the create kept failing 503 "
                   "until then), so it did not wait in the gap")
        if took > TAKEOVER_BOUND_S:
            fail("%s became the controller %.1f s after the kill of %s (bound %d s)"
                 % (new, took, old, TAKEOVER_BOUND_S))
        expect_eq("state of the old controller %s in the node list" % old, "dead",
                  via.node_row(old)["state"])
        rows = via.nodes()
        expect_eq("controllers in the node list", [new],
                  [r["name"] for r in rows if r.get("controller")])

        h1, hb = self.wait_runs_on("fo-1", via, not_on=(c,))
        M_done = time.monotonic() - t_kill
        self.expect_running_here(h1, "fo-1")
        M.wait_new_heartbeats(h1, "fo-1", 5)
        nc.log("fo-1 (created in the gap) runs on %s, %.1f s after the kill" % (h1.name, M_done))

        other = survivors[1]
        ans = self.create_retrying(other, "fo-2", bound_s=5)
        h2, _ = self.wait_runs_on("fo-2", other, not_on=(c,))
        self.expect_running_here(h2, "fo-2")
        M.wait_new_heartbeats(h2, "fo-2", 5)
        for name in ("fo-1", "fo-2"):
            for h in survivors:
                row = h.cluster_vms().get(name)
                if not row or row.get("node") == old:
                    fail("node %s lists %s as %r" % (h.name, name, row))
        # The old controller comes back: it rejoins as an ordinary node and
        # the controller stays where it is.
        c.start(timeout=60)
        nc.poll("%s to be ready again in the node list" % old,
                lambda: via.node_row(old)["state"] == "ready", 60, interval=0.25)
        st = c.cluster()
        if not st or not st.get("lease_valid"):
            fail("%s came back but its GET /v1/cluster says %r" % (old, st))
        expect_eq("controller after %s came back (asked %s)" % (old, old), new,
                  st.get("controller"))
        expect_eq("controllers in the node list after %s came back" % old, [new],
                  [r["name"] for r in via.nodes() if r.get("controller")])
        print("FAILOVER: controller %s killed; %s took over in %.1f s; a VM submitted %.1f s "
              "after the kill (answered at %.1f s) ran on %s %.1f s after the kill; the next "
              "on %s" % (old, new, took, t_submit - t_kill, t_created - t_kill, h1.name,
                         M_done, h2.name), flush=True)


if __name__ == "__main__":
    nc.main()
