#!/usr/bin/python3
"""Internal snapshots of a running guest: taking one, rolling back to it
(the guest's own heartbeat counter goes back in time, and its memory
self-check still passes), listing and deleting it, checked against the
API and against the qcow2 file itself."""

import json
import os
import subprocess

import nc
from nc import expect_eq, fail


def disk_snapshots(path):
    """Snapshot tags in a qcow2 file, read beside the running QEMU
    (-U: QEMU holds the image lock)."""
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", path], check=True,
                         capture_output=True, text=True).stdout
    return sorted(s["name"] for s in json.loads(out).get("snapshots", []))


class Snapshot(nc.TestCase):
    def test_snapshot_restore(self):
        d = self.start_daemon()
        d.register_image()
        # A working set that is being rewritten, so the restored memory has
        # something to get wrong.
        vm, _ = d.boot("snap", cmdline_append="nc.dirty_mib=16 nc.rate_mib=4")
        pid = vm["pid"]
        serial = d.serial("snap")
        disk = os.path.join(d.run_dir("snap"), "disk.qcow2")

        serial.wait_heartbeat(pred=lambda h: h.seq >= 5, timeout=10)
        a = serial.last().seq  # the newest seq before the snapshot request
        d.op_ok(d.api.expect(202, "POST", "/v1/vms/snap/snapshots", {"name": "s1"}))
        nc.log("snapshot s1 taken at heartbeat seq %d" % a)
        expect_eq("state after snapshot", "running", d.vm("snap")["state"])

        listed = d.api.expect(200, "GET", "/v1/vms/snap/snapshots").json["snapshots"]
        expect_eq("snapshot names listed", ["s1"], [s["name"] for s in listed], repr(listed))
        if not listed[0].get("created_at"):
            fail("snapshot has no created_at: %r" % listed)
        expect_eq("snapshots in the VM object", ["s1"],
                  [s["name"] for s in d.vm("snap")["snapshots"]])
        expect_eq("snapshots in %s" % disk, ["s1"], disk_snapshots(disk))

        # Let the guest run well past the snapshot, then roll it back.
        past = serial.wait_heartbeat(after_seq=a + 15, timeout=15)
        mark = serial.mark()
        d.op_ok(d.api.expect(202, "POST", "/v1/vms/snap/snapshots/s1/restore"))
        vm = d.vm("snap")
        expect_eq("state after restore", "running", vm["state"])
        expect_eq("pid after restore (same QEMU)", pid, vm["pid"])
        back = serial.wait_heartbeat(since=mark, pred=lambda h: h.seq <= a + 5, timeout=15)
        if back.seq <= a:
            fail("first heartbeat after restore has seq %d, but the guest had printed seq %d "
                 "before the snapshot was requested" % (back.seq, a))
        nc.log("restored: seq went from >= %d back to %d (snapshot at %d)"
               % (past.seq, back.seq, a))
        after = serial.heartbeats_during(1.5)
        if len(after) < 5:
            fail("restored guest printed only %d heartbeats in 1.5 s" % len(after))
        nc.expect_increasing("after restore", serial.heartbeats(back.offset), step=1)

        # Delete: gone from the API and from the disk.
        d.op_ok(d.api.expect(202, "DELETE", "/v1/vms/snap/snapshots/s1"))
        listed = d.api.expect(200, "GET", "/v1/vms/snap/snapshots").json["snapshots"]
        expect_eq("snapshots listed after delete", [], listed)
        expect_eq("snapshots in %s after delete" % disk, [], disk_snapshots(disk))

        for snap in ("s1", "never"):
            r = d.api.post("/v1/vms/snap/snapshots/%s/restore" % snap)
            expect_eq("restore of missing snapshot %s" % snap, (404, "not_found"),
                      (r.status, r.error.get("code")), repr(r))
        expect_eq("state after the failed restores", "running", d.vm("snap")["state"])
        # The guest is still the same healthy one (mem=ok is checked on every parse).
        serial.wait_heartbeat(after_seq=serial.last().seq, timeout=5)


if __name__ == "__main__":
    nc.main()
