#!/usr/bin/python3
"""Faults in the middle of a live migration.

Each test starts a migration from A to B over a link capped at 50 Mbit/s
while the guest dirties 100 MiB/s of a 128 MiB working set, so precopy is
still running when the fault lands:

  (a) kill -9 of B's novacrond: A's operation fails, the VM keeps running
      on A; B's restart removes the incoming leftover (VM record, QEMU,
      files);
  (b) kill -9 of A's novacrond, then a restart: exactly one running copy,
      and A's record says what is true (state, pid, the operation);
  (c) the link goes down (A's veth): A's operation fails within a bound,
      the VM keeps running on A, B cleans up on its own;
  (d) the source vanishes right after preparing B: B removes the incoming
      VM on its own, and stops promptly on SIGTERM meanwhile.

Throughout, the watch samples both nodes (VM state, QEMUs, heartbeats)
and fails the test if two copies ever ran at once."""

import time

import nc
import nc_migrate as M
from nc import expect_eq, fail

NAME = "mig-fault"
WORKLOAD = "nc.dirty_mib=128 nc.rate_mib=100 nc.pattern=random"
FAIL_BOUND_S = 60  # fault -> source's operation failed
CLEANUP_BOUND_S = 90  # fault -> destination has nothing left


class MigrateFaults(M.MigrationCase):
    link_tag = "f"

    def begin(self):
        a, b = self.start_nodes()
        vm, _ = a.boot(NAME, cmdline_append=WORKLOAD)
        M.wait_new_heartbeats(a, NAME, 10)
        watch = self.watch(NAME, [a, b])
        op, b_pids = M.start_slow_migration(self.link, a, b, NAME)
        time.sleep(1.0)
        return a, b, vm, watch, op, b_pids

    def expect_failed_in_time(self, a, op, t_fault, what):
        done = a.wait_op(op, FAIL_BOUND_S + 30)
        took = time.monotonic() - t_fault
        nc.log("A's operation after %s: %s %.1f s later: %r" % (what, done["status"], took,
                                                               done.get("error")))
        expect_eq("status of A's migration after %s" % what, "failed", done["status"],
                  "operation: %r" % done)
        if not (done.get("error") or {}).get("message"):
            fail("the failed migration has no error message: %r" % done)
        if took > FAIL_BOUND_S:
            fail("A's migration took %.1f s to fail after %s (bound %d s)"
                 % (took, what, FAIL_BOUND_S))
        return done

    def expect_b_clean(self, b, b_pids, bound_s):
        M.expect_gone(b, NAME, timeout=bound_s)
        M.expect_no_qemu(b)
        for pid in b_pids:
            if nc.pid_alive(pid):
                fail("node b: the incoming QEMU pid %d is still alive" % pid)
        expect_eq("vms on b", [], b.vm_names())

    def test_a_kill_destination_daemon(self):
        a, b, vm, watch, op, b_pids = self.begin()
        t = time.monotonic()
        b.kill9()
        self.expect_failed_in_time(a, op, t, "kill -9 of B's novacrond")
        v, _ = M.expect_runs_here(a, NAME, pid=vm["pid"])
        nc.log("A: %s (%r)" % (v["state"], v["state_reason"]))
        alive = [p for p in b_pids if nc.pid_alive(p)]
        nc.log("B's incoming QEMU while B is down: %r" % alive)
        watch.check()

        b.start()
        # B's restart must remove the incoming leftover at once (nothing
        # will ever complete that migration).
        self.expect_b_clean(b, b_pids, 10)
        M.wait_new_heartbeats(a, NAME, 10)
        watch.check()
        expect_eq("running copies", ["a"], [c.node.label for c in watch.running_copies()])

    def test_b_kill_source_daemon(self):
        a, b, vm, watch, op, b_pids = self.begin()
        a.kill9()
        t = time.monotonic()
        # Without its daemon, A's QEMU is on its own; B must not resume a
        # VM whose stream never completed.
        time.sleep(3)
        watch.check()
        a.start()
        nc.log("A restarted %.1f s after the kill" % (time.monotonic() - t))

        # Exactly one copy runs, on the node whose record says so.
        time.sleep(2)
        copies = watch.running_copies(window_s=1.0)
        nc.log("running copies after A's restart: %r" % [c.label for c in copies])
        if len(copies) != 1:
            fail("%d copies printed heartbeats in the last second, expected exactly 1\n%s"
                 % (len(copies), watch.describe()))
        here = copies[0].node
        there = b if here is a else a
        v = here.wait_state(NAME, "running", 30)
        M.expect_running_record(here, v)
        M.wait_new_heartbeats(here, NAME, 10)
        nc.log("the vm runs on %s (%r)" % (here.label, v["state_reason"]))
        if here is a:
            expect_eq("QEMU pid on A (the guest never moved)", vm["pid"], v["pid"])
            self.expect_b_clean(b, b_pids, CLEANUP_BOUND_S)
        else:
            M.expect_gone(a, NAME, timeout=30)
        M.expect_no_qemu(there)

        # A's record of the migration: not left running forever.
        cur = a.op(op["id"])
        nc.log("A's migration operation after the restart: %s %r" % (cur["status"],
                                                                      cur.get("error")))
        if cur["status"] not in ("failed", "cancelled", "succeeded"):
            fail("A's migration operation is still %r after A's restart: %r"
                 % (cur["status"], cur))
        if here is a and cur["status"] == "succeeded":
            fail("A's operation says the migration succeeded, but A runs the vm: %r" % cur)
        watch.check()

    def test_c_link_down(self):
        a, b, vm, watch, op, b_pids = self.begin()
        t = time.monotonic()
        self.link.set_link(0, False)
        self.expect_failed_in_time(a, op, t, "the link went down")
        v, _ = M.expect_runs_here(a, NAME, pid=vm["pid"])
        nc.log("A: %s (%r)" % (v["state"], v["state_reason"]))
        left = CLEANUP_BOUND_S - (time.monotonic() - t)
        self.expect_b_clean(b, b_pids, max(left, 1))
        nc.log("B cleaned up %.1f s after the link went down" % (time.monotonic() - t))
        watch.check()
        expect_eq("running copies", ["a"], [c.node.label for c in watch.running_copies()])

    def test_d_source_never_connects(self):
        """The source vanishes right after preparing the destination (this
        test plays that source: it asks B to prepare, then never opens the
        DWCP streams). B removes what it prepared on its own within a
        bound, and while it waits it still stops promptly on SIGTERM."""
        a, b = self.start_nodes()
        spec = {"name": NAME, "vcpus": 1, "memory_bytes": 256 << 20, "image": nc.IMAGE,
                "nic": "user", "labels": {}, "cmdline_append": WORKLOAD}

        def prepare():
            # As a real source on this non-loopback link would: TLS, with
            # the certificate fingerprint it would present (A's).
            fp = a.api.expect(200, "GET", "/v1/node").json["dwcp"]["fingerprint"]
            r = b.api.post("/v1/migrations/incoming", {"vm": spec, "source": "gone",
                                                       "streams": 2, "tls": True,
                                                       "fingerprint": fp,
                                                       "hde_version": M.HDE_VERSION,
                                                       "base_disk": M.base_disk()})
            if r.status != 201 or not r.json.get("session") or not r.json.get("port"):
                fail("POST /v1/migrations/incoming: expected 201 with a session and a port, "
                     "got %r" % r)
            v = b.vm(NAME)
            expect_eq("state of the prepared incoming vm", "migrating", v["state"])
            pids = b.qemu_pids()
            expect_eq("QEMUs on b once prepared", 1, len(pids))
            return pids

        problems = []

        def clean(pids, bound_s):
            try:
                self.expect_b_clean(b, pids, bound_s)
            except AssertionError as e:
                if b.vm_or_none(NAME) is not None or b.qemu_pids():
                    raise
                problems.append(str(e))  # only files are left: go on, report at the end

        t = time.monotonic()
        pids = prepare()
        clean(pids, CLEANUP_BOUND_S)
        nc.log("B removed the unfed incoming vm %.1f s after preparing it"
               % (time.monotonic() - t))

        if b.vm_or_none(NAME) is None and not b.qemu_pids():
            M.run("rm", "-rf", b.run_dir(NAME))  # a leftover reported above must not block
        pids = prepare()
        time.sleep(1)
        t = time.monotonic()
        b.proc.terminate()
        try:
            b.proc.wait(60)
        except Exception:  # subprocess.TimeoutExpired; the cleanup kills it
            pass
        took = time.monotonic() - t
        nc.log("B stopped %.1f s after SIGTERM (exit %r) with an incoming migration waiting"
               % (took, b.proc.returncode))
        if took > 10:
            problems.append("novacrond took %.1f s to stop on SIGTERM while an incoming "
                            "migration waited for its source (bound 10 s): shutdown does not "
                            "interrupt the wait for the DWCP streams" % took)
        b.start()
        clean(pids, 10)
        expect_eq("vms on a", [], a.vm_names())
        if problems:
            fail("the unfed incoming migration was handled, but:\n  " + "\n  ".join(problems))

if __name__ == "__main__":
    nc.main()
