#!/usr/bin/python3
"""One VM through its whole life cycle, checked against the guest itself:
the heartbeats on its serial console say whether it really runs, is really
frozen, really rebooted; /proc says whether its QEMU really exists."""

import os
import time

import nc
from nc import expect_eq, fail


class Lifecycle(nc.TestCase):
    def test_lifecycle(self):
        d = self.start_daemon()
        d.register_image()
        vm, hb = d.boot("life")
        expect_eq("state after create with start", "running", vm["state"])
        pid = vm["pid"]
        if not isinstance(pid, int) or not nc.pid_alive(pid):
            fail("running vm has pid %r, which is not a live process" % pid)
        run_dir = d.run_dir("life")
        expect_eq("QEMU processes for %s" % run_dir, [pid], nc.qemu_pids_for(run_dir))
        # The machine type is pinned at create to what "pc" is on this
        # QEMU, and QEMU runs exactly that.
        machine = vm.get("machine") or ""
        if not machine.startswith("pc-i440fx-"):
            fail("created vm has machine %r, want a versioned pc-i440fx-X.Y" % machine)
        expect_eq("QEMU's -machine", machine, nc.qemu_machine(pid))
        nc.log("vm life: machine %s, QEMU pid %d runs -machine %s"
               % (machine, pid, nc.qemu_machine(pid)))
        serial = d.serial("life")

        # pause: the guest is frozen, so not one more heartbeat completes.
        d.action("life", "pause")
        vm = d.vm("life")
        expect_eq("state after pause", "paused", vm["state"])
        expect_eq("pid after pause", pid, vm["pid"])
        frozen = serial.last()
        late = serial.heartbeats_during(2.0)
        if late:
            fail("paused guest printed %d heartbeats in 2 s (seq %d..%d; last before: %d)"
                 % (len(late), late[0].seq, late[-1].seq, frozen.seq))
        expect_eq("state 2 s into the pause", "paused", d.vm("life")["state"])

        # resume: the same boot carries on from the next seq.
        mark = serial.mark()
        d.action("life", "resume")
        expect_eq("state after resume", "running", d.vm("life")["state"])
        nxt = serial.wait_heartbeat(since=mark, timeout=10)
        expect_eq("first seq after resume (last before pause was %d)" % frozen.seq,
                  frozen.seq + 1, nxt.seq)
        more = serial.heartbeats_during(1.0)
        if len(more) < 3:
            fail("resumed guest printed only %d heartbeats in 1 s: %r" % (len(more), more))
        nc.expect_increasing("after resume", [nxt] + more, step=1)

        # reboot: same QEMU, new boot, so the workload counts from 0 again.
        # First let the count climb well above what a fresh boot prints.
        serial.wait_heartbeat(pred=lambda h: h.seq >= 20, timeout=10)
        mark = serial.mark()
        before = serial.last()
        d.action("life", "reboot")
        reborn = serial.wait_heartbeat(since=mark, pred=lambda h: h.seq < before.seq)
        if reborn.seq > 2:
            fail("after reboot the first heartbeat of the new boot has seq %d, expected a "
                 "fresh count (0..2); the last of the old boot was %d" % (reborn.seq, before.seq))
        vm = d.vm("life")
        expect_eq("state after reboot", "running", vm["state"])
        expect_eq("pid after reboot (a guest reset keeps the same QEMU)", pid, vm["pid"])
        nc.expect_increasing("after reboot",
                             [h for h in serial.heartbeats(reborn.offset)], step=1)

        # stop: an ACPI power-off the guest obeys (its acpid runs poweroff),
        # so it is done in a few seconds, long before stop_timeout_s (30 s)
        # would make novacrond quit QEMU under the guest.
        t = time.monotonic()
        d.action("life", "stop")
        took = time.monotonic() - t
        if took > 15:
            fail("graceful stop took %.1f s: the guest did not power off on the ACPI power "
                 "button, novacrond quit QEMU after its timeout (daemon log: %r)"
                 % (took, [l for l in d.log_tail(20).splitlines() if "power off" in l]))
        vm = d.vm("life")
        expect_eq("state after stop", "stopped", vm["state"])
        expect_eq("pid of a stopped vm", None, vm["pid"])
        nc.wait_gone(pid, 5)
        expect_eq("QEMU processes for %s after stop" % run_dir, [], nc.qemu_pids_for(run_dir))
        time.sleep(1.5)  # a few reconciler passes
        expect_eq("state 1.5 s after stop", "stopped", d.vm("life")["state"])

        # start again: a new QEMU, a new boot, a fresh serial log.
        d.action("life", "start")
        vm = d.wait_state("life", "running", 5)
        pid2 = vm["pid"]
        if not isinstance(pid2, int) or not nc.pid_alive(pid2) or pid2 == pid:
            fail("restarted vm has pid %r (old pid %d): expected a new live QEMU" % (pid2, pid))
        serial.wait_heartbeat(since=0, pred=lambda h: h.seq >= 3)
        # serial.log is truncated at each start: one boot's count from 0,
        # not the two boots (and a reset) of the first run before it.
        hbs = serial.heartbeats()
        expect_eq("first heartbeat in serial.log after a new start", 0, hbs[0].seq)
        nc.expect_increasing("serial.log after a new start", hbs, step=1)

        # delete: record, process, files and sockets all go.
        d.op_ok(d.api.expect(202, "DELETE", "/v1/vms/life"))
        r = d.api.get("/v1/vms/life")
        expect_eq("GET after delete", 404, r.status, repr(r))
        expect_eq("error code of GET after delete", "not_found", r.error.get("code"), repr(r))
        nc.wait_gone(pid2, 5)
        expect_eq("QEMU processes for %s after delete" % run_dir, [], nc.qemu_pids_for(run_dir))
        if os.path.exists(run_dir):
            fail("%s still exists after delete, holding %r" % (run_dir, os.listdir(run_dir)))
        expect_eq("unix sockets bound under %s after delete" % run_dir, [],
                  nc.unix_sockets_under(run_dir + "/"))
        names = [v["name"] for v in d.api.expect(200, "GET", "/v1/vms").json["vms"]]
        expect_eq("vms listed after delete", [], names)


if __name__ == "__main__":
    nc.main()
