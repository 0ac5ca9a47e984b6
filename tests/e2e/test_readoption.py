#!/usr/bin/python3
"""Guests outlive the daemon: kill -9 novacrond and the QEMU keeps running;
a new novacrond re-adopts it (same pid, same operations, and it can still
drive it). And when the QEMU died while no daemon watched, the new daemon
says so instead of pretending it runs."""

import os
import re
import signal
import time

import nc
from nc import expect_eq, fail


class Readoption(nc.TestCase):
    def test_readopt_after_kill9(self):
        d = self.start_daemon()
        d.register_image()
        vm, _ = d.boot("keep")
        pid = vm["pid"]
        serial = d.serial("keep")
        ops_before = d.api.expect(200, "GET", "/v1/operations").json["operations"]
        start_op = [o for o in ops_before if o["kind"] == "vm.start" and o["target"] == "keep"]
        expect_eq("vm.start operations for keep", 1, len(start_op), repr(ops_before))

        # The daemon dies hard; the guest must not notice.
        d.kill9()
        last = serial.last()
        time.sleep(1.0)
        if not nc.pid_alive(pid):
            fail("QEMU pid %d died with novacrond" % pid)
        serial.wait_heartbeat(after_seq=last.seq, timeout=5)
        nc.expect_increasing("while novacrond is down", serial.heartbeats(last.offset), step=1)

        d.start()
        vm = d.vm("keep")
        expect_eq("state after re-adoption", "running", vm["state"])
        expect_eq("pid after re-adoption", pid, vm["pid"])
        expect_eq("QEMUs for the run dir", [pid], nc.qemu_pids_for(d.run_dir("keep") + "/"))
        ops_after = {o["id"]: o for o in
                     d.api.expect(200, "GET", "/v1/operations").json["operations"]}
        for o in ops_before:
            if o["id"] not in ops_after:
                fail("operation %s (%s) is not listed after the restart; listed: %r"
                     % (o["id"], o["kind"], sorted(ops_after)))
            expect_eq("status of %s after the restart" % o["id"], o["status"],
                      ops_after[o["id"]]["status"])
        listed = d.api.expect(200, "GET", "/v1/operations").json["operations"]
        created = [o["created_at"] for o in listed]
        expect_eq("operations are listed newest first", sorted(created, reverse=True), created)
        r = d.api.expect(200, "GET", "/v1/operations/" + start_op[0]["id"])
        expect_eq("the start operation after the restart", "succeeded", r.json["status"])

        # The new daemon really drives the adopted QEMU.
        d.action("keep", "pause")
        expect_eq("state after pause through the new daemon", "paused", d.vm("keep")["state"])
        frozen = serial.last()
        late = serial.heartbeats_during(1.5)
        if late:
            fail("guest paused through the new daemon still printed %r" % (late,))
        # A paused guest is re-adopted as paused, and stays frozen.
        d.kill9()
        d.start()
        vm = d.vm("keep")
        expect_eq("state and pid re-adopted while paused", ("paused", pid),
                  (vm["state"], vm["pid"]))
        late = serial.heartbeats_during(1.0)
        if late:
            fail("paused guest printed %r across the daemon restart" % (late,))
        mark = serial.mark()
        d.action("keep", "resume")
        expect_eq("state after resume", "running", d.vm("keep")["state"])
        nxt = serial.wait_heartbeat(since=mark, timeout=10)
        expect_eq("first seq after resume", frozen.seq + 1, nxt.seq)
        expect_eq("pid after pause/resume", pid, d.vm("keep")["pid"])

        # An orderly stop (SIGTERM, what systemd sends) leaves it running too.
        d.stop()
        if not nc.pid_alive(pid):
            fail("QEMU pid %d died when novacrond got SIGTERM" % pid)
        last = serial.last()
        serial.wait_heartbeat(after_seq=last.seq, timeout=5)
        d.start()
        vm = d.vm("keep")
        expect_eq("state and pid after a SIGTERM restart", ("running", pid),
                  (vm["state"], vm["pid"]))

        # Now the guest dies while no daemon is looking.
        d.kill9()
        os.kill(pid, signal.SIGKILL)
        nc.wait_gone(pid, 5)
        d.start()
        vm = d.vm("keep")
        expect_eq("state when QEMU died while the daemon was down", "failed", vm["state"],
                  "reason %r" % vm["state_reason"])
        reason = vm["state_reason"]
        if not re.search(r"exit|died|gone", reason, re.I) or \
                not re.search(r"while novacrond was (down|not running)", reason, re.I):
            fail("failed vm's reason should say the hypervisor exited while novacrond was "
                 "down, it is %r" % reason)
        expect_eq("pid of the failed vm", None, vm["pid"])
        # And it stays that way: the reconciler must not resurrect or change it.
        time.sleep(1.5)
        expect_eq("state 1.5 s later", "failed", d.vm("keep")["state"])


if __name__ == "__main__":
    nc.main()
