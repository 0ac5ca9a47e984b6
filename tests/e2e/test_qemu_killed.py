#!/usr/bin/python3
"""A QEMU killed behind the daemon's back: the VM is marked failed with a
reason within a few reconciler passes, and start brings it back."""

import json
import os
import re
import signal
import time

import nc
from nc import expect_eq, fail


class QemuKilled(nc.TestCase):
    def test_qemu_killed(self):
        d = self.start_daemon()
        d.register_image()
        vm, _ = d.boot("victim")
        pid = vm["pid"]
        stream = nc.EventStream(d.api)
        self.addCleanup(stream.close)

        os.kill(pid, signal.SIGKILL)
        t = time.monotonic()
        nc.wait_gone(pid, 5)
        vm = d.wait_state("victim", "failed", 5)
        nc.log("vm failed %.1f s after SIGKILL: %r" % (time.monotonic() - t, vm["state_reason"]))
        reason = vm["state_reason"]
        if not re.search(r"exit|died|gone|killed", reason, re.I):
            fail("failed vm's reason should say its hypervisor process ended, it is %r" % reason)
        expect_eq("pid of the failed vm", None, vm["pid"])
        expect_eq("desired state of the failed vm (nobody asked it to stop)", "running",
                  vm["desired_state"])

        # The change was published, with the same reason.
        while True:
            ev = stream.next(5)
            if ev is None:
                fail("no vm.state event running -> failed on /v1/events")
            if ev[1] == "vm.state":
                data = json.loads(ev[2])
                if data["vm"] == "victim" and data["to"] == "failed":
                    expect_eq("event transition", ("running", "failed"),
                              (data["from"], data["to"]), repr(data))
                    expect_eq("event reason", reason, data["reason"])
                    break

        # It stays failed (nothing restarts it behind the user's back) ...
        time.sleep(1.5)
        expect_eq("state 1.5 s later", "failed", d.vm("victim")["state"])
        # ... until asked: start recovers it.
        d.action("victim", "start")
        vm = d.wait_state("victim", "running", 10)
        if vm["pid"] == pid or not nc.pid_alive(vm["pid"]):
            fail("restarted vm has pid %r (the killed one was %d)" % (vm["pid"], pid))
        hb = d.serial("victim").wait_heartbeat(since=0)
        expect_eq("first heartbeat of the recovered guest", 0, hb.seq)


if __name__ == "__main__":
    nc.main()
