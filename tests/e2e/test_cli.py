#!/usr/bin/python3
"""The novacron CLI against a real daemon and guest: each command's exit
status (0 done, 1 refused or failed, 2 usage, 3 no daemon), its table and
JSON output checked against the API, and `vm console` through a pipe
running a command in the guest's shell.

Skipped, with the reason, while ${NC_BUILD}/bin/novacron is not built."""

import json
import os
import random
import re
import subprocess
import time
import unittest

import nc
from nc import expect_eq, fail


class Cli(nc.TestCase):
    def setUp(self):
        if not os.access(nc.CLI, os.X_OK):
            raise unittest.SkipTest("%s is not built yet (the CLI is being finished); "
                                    "nothing to test" % nc.CLI)
        super().setUp()

    def cli(self, *args, data_dir=None, expect=0, stdin=None, timeout=120):
        """Runs novacron --data-dir D ARGS; fails unless it exits with
        expect. Returns (stdout, stderr) as text."""
        argv = [nc.CLI, "--data-dir", data_dir or self.d.data] + list(args)
        t = time.monotonic()
        p = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        nc.log("$ novacron %s -> %d (%.1f s)" % (" ".join(args), p.returncode,
                                                  time.monotonic() - t))
        if p.returncode != expect:
            fail("novacron %s: expected exit %d, got %d\nstdout: %s\nstderr: %s"
                 % (" ".join(args), expect, p.returncode, out, err))
        return out, err

    def test_cli(self):
        # 3: no daemon at that data directory.
        self.d = None
        nowhere = os.path.join(self.tmp, "nowhere")
        _, err = self.cli("vm", "list", data_dir=nowhere, expect=3)
        if "nowhere" not in err:
            fail("exit 3 should say where it looked for novacrond, stderr: %r" % err)

        d = self.d = self.start_daemon()
        # 2: usage errors, before any request.
        self.cli("vm", "frobnicate", expect=2)
        self.cli("vm", "create", "c1", expect=2)  # no --image
        self.cli("vm", "create", "c1", "--image", nc.IMAGE, "--vcpus", "two", expect=2)
        self.cli("--output", "yaml", "vm", "list", expect=2)
        expect_eq("vms after the usage errors", [],
                  d.api.expect(200, "GET", "/v1/vms").json["vms"])

        # images
        self.cli("image", "register", nc.IMAGE, "--from-json", nc.IMAGE_JSON)
        out, _ = self.cli("image", "list")
        if not re.search(r"^%s\s" % nc.IMAGE, out, re.M):
            fail("image list has no %s row:\n%s" % (nc.IMAGE, out))
        out, _ = self.cli("--output", "json", "image", "list")
        api_images = d.api.expect(200, "GET", "/v1/images").json
        expect_eq("image list --output json", api_images, json.loads(out))

        # create --start: the CLI waits for the operation.
        self.cli("vm", "create", "c1", "--image", nc.IMAGE, "--memory", "256M",
                 "--label", "app=cli", "--cmdline-append", "nc.hb_ms=3000", "--start")
        vm = d.vm("c1")
        expect_eq("state right after `vm create --start` returned", "running", vm["state"])
        expect_eq("labels", {"app": "cli"}, vm["labels"])
        serial = d.serial("c1")
        serial.wait_heartbeat()

        out, _ = self.cli("vm", "list")
        row = [l for l in out.splitlines() if l.split()[:1] == ["c1"]]
        if len(row) != 1 or "running" not in row[0].split():
            fail("vm list should have one c1 row saying running:\n%s" % out)
        if not out.splitlines()[0].split()[:2] == ["NAME", "STATE"]:
            fail("vm list header should start NAME STATE:\n%s" % out)
        out, _ = self.cli("--output", "json", "vm", "show", "c1")
        shown = json.loads(out)
        vm = d.vm("c1")
        for k in ("name", "state", "pid", "memory", "image", "labels"):
            expect_eq("vm show --output json: %s" % k, vm[k], shown.get(k))
        out, _ = self.cli("vm", "show", "c1")
        if "c1" not in out or "running" not in out:
            fail("vm show (table) lacks the name or state:\n%s" % out)

        # pause/resume, and 1 for what the server refuses.
        self.cli("vm", "pause", "c1")
        expect_eq("state after vm pause", "paused", d.vm("c1")["state"])
        _, err = self.cli("vm", "pause", "c1", expect=1)
        if "paused" not in err:
            fail("refused pause should say why (already paused), stderr: %r" % err)
        self.cli("vm", "resume", "c1")
        expect_eq("state after vm resume", "running", d.vm("c1")["state"])
        self.cli("vm", "show", "nope", expect=1)
        self.cli("vm", "create", "c1", "--image", nc.IMAGE, expect=1)  # name taken

        out, _ = self.cli("op", "list")
        for op in d.api.expect(200, "GET", "/v1/operations").json["operations"]:
            if op["id"] not in out:
                fail("op list lacks operation %s (%s):\n%s" % (op["id"], op["kind"], out))
        out, _ = self.cli("--output", "json", "op", "list")
        listed = json.loads(out)
        ops = listed["operations"] if isinstance(listed, dict) else listed
        kinds = [o["kind"] for o in ops if o["target"] == "c1"]
        for k in ("vm.start", "vm.pause", "vm.resume"):
            if k not in kinds:
                fail("op list --output json has no %s for c1: %r" % (k, kinds))

        # The console, through pipes: a command typed into the guest's shell.
        serial.wait_heartbeat(pred=lambda h: True)
        nc.poll("the guest's shell prompt in serial.log", lambda: b"/ # " in serial.read(), 30)
        word = "hello-%d" % random.randrange(10 ** 6, 10 ** 7)
        out, _ = self.cli("vm", "console", "c1", stdin=("\necho %s\n" % word).encode(),
                          timeout=60)
        if not re.search(r"^%s\r?$" % word, out, re.M):
            fail("vm console: the guest's answer %r is not on stdout:\n%r" % (word, out[-2000:]))
        if word not in serial.read().decode(errors="replace"):
            fail("%s is not in serial.log: the console did not reach the guest" % word)

        # stop, delete
        self.cli("vm", "stop", "c1")
        vm = d.vm("c1")
        expect_eq("state after vm stop", "stopped", vm["state"])
        self.cli("vm", "delete", "c1")
        expect_eq("GET after vm delete", 404, d.api.get("/v1/vms/c1").status)
        out, _ = self.cli("vm", "list")
        if re.search(r"^c1\s", out, re.M):
            fail("vm list still shows c1 after delete:\n%s" % out)
        self.cli("vm", "delete", "c1", expect=1)

        # 3 again once the daemon is gone.
        d.stop()
        self.cli("vm", "list", expect=3)


if __name__ == "__main__":
    nc.main()
