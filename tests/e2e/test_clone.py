#!/usr/bin/python3
"""Cloning: refused while the source runs (its disk is not consistent),
then from the stopped source a new VM with its own disk that boots, while
the source stays usable. At most two guests run at once."""

import os

import nc
from nc import expect_eq, fail


class Clone(nc.TestCase):
    def test_clone(self):
        d = self.start_daemon()
        d.register_image()
        labels = {"app": "web", "tier": "front"}
        src, _ = d.boot("src", vcpus=1, labels=labels, cmdline_append="nc.dirty_mib=8")

        # A running source cannot be cloned, and the refusal changes nothing.
        r = d.api.post("/v1/vms/src/clone", {"name": "copy", "start": True})
        expect_eq("clone of a running vm", (409, "conflict"), (r.status, r.error.get("code")),
                  repr(r))
        expect_eq("GET of the refused clone", 404, d.api.get("/v1/vms/copy").status)
        if os.path.exists(d.run_dir("copy")):
            fail("refused clone left %s behind" % d.run_dir("copy"))

        # Stopped (forced: this test is about the disk, not ACPI), it can.
        d.action("src", "stop", {"force": True})
        expect_eq("source state", "stopped", d.vm("src")["state"])
        nc.wait_gone(src["pid"], 5)
        r = d.api.expect(202, "POST", "/v1/vms/src/clone", {"name": "copy", "start": True})
        op = d.op_ok(r)
        expect_eq("operation kind", "vm.clone", op["kind"])
        copy = d.wait_state("copy", "running", 10)
        for k in ("vcpus", "memory", "memory_bytes", "image", "nic", "labels", "cmdline_append"):
            expect_eq("clone's %s" % k, src[k], copy[k])
        hb = d.serial("copy").wait_heartbeat()
        nc.log("clone booted: pid %d, heartbeat seq %d" % (copy["pid"], hb.seq))
        if not nc.pid_alive(copy["pid"]) or copy["pid"] == src["pid"]:
            fail("clone has pid %r (source had %r): expected a new live QEMU"
                 % (copy["pid"], src["pid"]))
        expect_eq("QEMUs for the clone's run dir", [copy["pid"]],
                  nc.qemu_pids_for(d.run_dir("copy") + "/"))
        src_disk = os.path.join(d.run_dir("src"), "disk.qcow2")
        copy_disk = os.path.join(d.run_dir("copy"), "disk.qcow2")
        if not os.path.isfile(copy_disk):
            fail("clone has no disk of its own at %s" % copy_disk)
        if os.path.samefile(src_disk, copy_disk):
            fail("clone's disk %s is the source's %s" % (copy_disk, src_disk))

        # The source is untouched by the clone and still starts.
        expect_eq("source state after the clone", "stopped", d.vm("src")["state"])
        d.action("src", "start")
        again = d.wait_state("src", "running", 10)
        d.serial("src").wait_heartbeat(since=0)
        if again["pid"] == copy["pid"] or not nc.pid_alive(copy["pid"]):
            fail("source pid %r / clone pid %r: both should run, as different QEMUs"
                 % (again["pid"], copy["pid"]))
        expect_eq("clone state with the source running again", "running",
                  d.vm("copy")["state"])
        # Both guests are alive: each keeps printing its own heartbeats.
        for name in ("src", "copy"):
            s = d.serial(name)
            s.wait_heartbeat(after_seq=s.last().seq, timeout=5)

        # Cloning onto an existing name is a conflict too.
        d.action("copy", "stop", {"force": True})
        r = d.api.post("/v1/vms/copy/clone", {"name": "src"})
        expect_eq("clone onto an existing name", (409, "conflict", "name"),
                  (r.status, r.error.get("code"), r.error.get("field")), repr(r))


if __name__ == "__main__":
    nc.main()
