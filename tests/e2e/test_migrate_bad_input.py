#!/usr/bin/python3
"""Refused and failing migration requests.

Malformed bodies (missing or bad "to", an unknown field, a bad mode,
streams out of 1..16, other fields out of range, wrong types) get 400 with
the documented code and field, create no operation and change nothing: the
VM keeps running on A with the same QEMU, B has nothing. A VM that does
not exist is 404; a stopped one is 409. A migration to an address where no
node answers is accepted (202) and its operation fails, naming the
address, while the VM keeps running. The CLI reports the same refusals
with the documented exit statuses.

TLS: a man in the middle on the API path (a proxy in B's namespace) swaps
the certificate fingerprint in B's answer to the incoming request: the
source must refuse B's DWCP endpoint (peer_key_mismatch) before sending
anything, and the VM keeps running on A. B refuses an incoming request for
plain TCP (its dwcp_tls = auto on a non-loopback address): 409
tls_required.

Base disk: B refuses an incoming request without base_disk (a source from
before the check: 409 incompatible_version) or with a malformed one (400).
Then B is replaced by a node C (same address) that registered the image
name over another file: a copy of the test image's base disk with one byte
changed. The migration fails with image_mismatch naming the image and the
fix, the VM keeps running on A with its memory intact, and C has no VM
record, no operation, no QEMU and no VM directory. C refuses the same way
a request whose image has a disk only on one side (409 image_mismatch) and,
once its base disk file is gone, any request for that image (422)."""

import json
import os
import shutil
import subprocess
import sys
import time

import nc
import nc_migrate as M
from nc import expect_eq, fail

NAME = "mig-bad"
ANY = object()

# A proxy for B's API that passes everything through but puts another
# fingerprint into the answer to POST /v1/migrations/incoming.
MITM = r"""
import http.server, json, sys, urllib.error, urllib.request
host, port, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def relay(self):
        n = int(self.headers.get("Content-Length") or 0)
        req = urllib.request.Request("http://" + target + self.path,
                                     data=self.rfile.read(n) if n else None, method=self.command)
        for k in ("Authorization", "Content-Type", "X-Novacron-Direct"):
            if self.headers.get(k):
                req.add_header(k, self.headers[k])
        try:
            r = urllib.request.urlopen(req, timeout=60)
            status, data = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        if self.path == "/v1/migrations/incoming" and status in (200, 201):
            j = json.loads(data)
            j["fingerprint"] = "ab" * 32
            data = json.dumps(j).encode()
            sys.stderr.write("mitm: swapped the fingerprint\n")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    do_GET = do_POST = relay
http.server.ThreadingHTTPServer((host, port), H).serve_forever()
"""
MITM_PORT = 8471

# (what, body, status, code, field); "{b}" in "to" is node B's API address.
CASES = [
    ("missing to", {}, 400, "missing_field", "to"),
    ("to null", {"to": None}, 400, "invalid_field", "to"),
    ("to a number", {"to": 8470}, 400, "invalid_field", "to"),
    ("to without a port", {"to": "10.78.0.2"}, 400, "invalid_field", "to"),
    ("to with an empty host", {"to": ":8470"}, 400, "invalid_field", "to"),
    ("to with an empty port", {"to": "10.78.0.2:"}, 400, "invalid_field", "to"),
    ("to with port 0", {"to": "10.78.0.2:0"}, 400, "invalid_field", "to"),
    ("to with port 65536", {"to": "10.78.0.2:65536"}, 400, "invalid_field", "to"),
    ("to with a named port", {"to": "10.78.0.2:http"}, 400, "invalid_field", "to"),
    ("unknown field", {"to": "{b}", "speed": "fast"}, 400, "unknown_field", ANY),
    ("bad mode", {"to": "{b}", "mode": "warp"}, 400, "invalid_field", "mode"),
    ("mode not a string", {"to": "{b}", "mode": 1}, 400, "invalid_field", "mode"),
    ("streams 0", {"to": "{b}", "streams": 0}, 400, "invalid_field", "streams"),
    ("streams 17", {"to": "{b}", "streams": 17}, 400, "invalid_field", "streams"),
    ("streams a string", {"to": "{b}", "streams": "4"}, 400, "invalid_field", "streams"),
    ("streams fractional", {"to": "{b}", "streams": 2.5}, 400, "invalid_field", "streams"),
    ("max_downtime_ms 9", {"to": "{b}", "max_downtime_ms": 9}, 400, "invalid_field",
     "max_downtime_ms"),
    ("max_downtime_ms 60001", {"to": "{b}", "max_downtime_ms": 60001}, 400, "invalid_field",
     "max_downtime_ms"),
    ("timeout_s 4", {"to": "{b}", "timeout_s": 4}, 400, "invalid_field", "timeout_s"),
    ("timeout_s 86401", {"to": "{b}", "timeout_s": 86401}, 400, "invalid_field", "timeout_s"),
    ("token not a string", {"to": "{b}", "token": 42}, 400, "invalid_field", "token"),
]


def fill(body, b):
    return {k: (v.replace("{b}", b.endpoint) if isinstance(v, str) else v)
            for k, v in body.items()}


class MigrateBadInput(M.MigrationCase):
    link_tag = "i"

    def ops(self, node):
        return [o["id"] for o in node.api.expect(200, "GET", "/v1/operations").json["operations"]]

    def unchanged(self, a, b, vm, ops_a, ops_b, what):
        v = a.vm(NAME)
        expect_eq("state on A after %s" % what, "running", v["state"])
        expect_eq("QEMU pid on A after %s" % what, vm["pid"], v["pid"])
        expect_eq("operations on A after %s" % what, ops_a, self.ops(a))
        expect_eq("operations on B after %s" % what, ops_b, self.ops(b))
        expect_eq("vms on B after %s" % what, [], b.vm_names())
        M.expect_no_qemu(b)

    def test_bad_input(self):
        a, b = self.start_nodes()
        vm, _ = a.boot(NAME, cmdline_append="nc.dirty_mib=16 nc.rate_mib=5")
        watch = self.watch(NAME, [a, b])
        ops_a, ops_b = self.ops(a), self.ops(b)

        # ---- malformed requests: 400, nothing happens ----
        bad = []
        for what, body, status, code, field in CASES:
            r = a.api.post("/v1/vms/%s/migrate" % NAME, fill(body, b))
            err = r.error
            ok = (r.status == status and err.get("code") == code and
                  (field is ANY or err.get("field") == field) and err.get("message"))
            nc.log("%-24s -> %d %s field=%r: %s" % (what, r.status, err.get("code"),
                                                   err.get("field"), err.get("message")))
            if not ok:
                bad.append("%s: expected %d %s field %s, got %r"
                           % (what, status, code, "(any)" if field is ANY else repr(field), r))
        for what, raw in (("not JSON", b'{"to": '), ("a JSON array", b'["10.78.0.2:8470"]')):
            r = a.api.request("POST", "/v1/vms/%s/migrate" % NAME, raw=raw)
            nc.log("%-24s -> %d %s" % (what, r.status, r.error.get("code")))
            if r.status != 400 or r.error.get("code") != "bad_json":
                bad.append("%s: expected 400 bad_json, got %r" % (what, r))
        if bad:
            fail("%d of %d malformed migrate requests were not refused as documented:\n  %s"
                 % (len(bad), len(CASES) + 2, "\n  ".join(bad)))
        self.unchanged(a, b, vm, ops_a, ops_b, "the malformed requests")

        # ---- no such VM: 404 ----
        r = a.api.post("/v1/vms/no-such-vm/migrate", {"to": b.endpoint})
        expect_eq("migrating a VM that does not exist", (404, "not_found"),
                  (r.status, r.error.get("code")), repr(r))
        self.unchanged(a, b, vm, ops_a, ops_b, "migrating a missing VM")

        # ---- the CLI refuses the same before sending, and reports the server ----
        cli = [nc.CLI, "--data-dir", a.data, "vm", "migrate"]
        for args, status, text in (
                ([NAME, "--to", b.endpoint, "--streams", "17"], 2, '--streams "17"'),
                ([NAME, "--to", "10.78.0.2"], 2, "is not HOST:PORT"),
                (["no-such-vm", "--to", b.endpoint], 1, "no-such-vm")):
            p = subprocess.run(cli + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=60)
            err = p.stderr.decode()
            nc.log("novacron vm migrate %s -> exit %d: %s" % (" ".join(args), p.returncode,
                                                              err.strip().splitlines()[0]))
            if p.returncode != status or text not in err:
                fail("novacron vm migrate %s: exit %d, stderr %r; expected exit %d and %r"
                     % (" ".join(args), p.returncode, err, status, text))
        self.unchanged(a, b, vm, ops_a, ops_b, "the refused CLI calls")

        # ---- nobody at the address: accepted, fails, the VM stays ----
        for what, to in (("an address nobody has", "10.78.%d.99:8470" % self.link.n),
                         ("a port nobody listens on", "%s:1" % b.addr)):
            t = time.monotonic()
            op = a.migrate(NAME, to)
            done = a.wait_op(op, 90)
            took = time.monotonic() - t
            nc.log("migrate to %s (%s): %s after %.1f s: %r" % (to, what, done["status"], took,
                                                               done.get("error")))
            expect_eq("status of a migration to %s" % what, "failed", done["status"],
                      "operation: %r" % done)
            msg = (done.get("error") or {}).get("message") or ""
            if to not in msg:
                fail("the error of a migration to %s does not name the address %s: %r"
                     % (what, to, done.get("error")))
            if took > 60:
                fail("a migration to %s took %.1f s to fail" % (what, took))
            M.expect_runs_here(a, NAME, pid=vm["pid"], heartbeats=5)
            expect_eq("vms on B", [], b.vm_names())
            M.expect_no_qemu(b)
        watch.check()

        # ---- TLS: B refuses plain TCP; a swapped fingerprint is refused ----
        ops_a, ops_b = self.ops(a), self.ops(b)
        r = b.api.post("/v1/migrations/incoming", {"vm": {"name": NAME}, "source": "a",
                                                   "streams": 1, "tls": True})
        nc.log("incoming request without hde_version -> %r" % r)
        expect_eq("B's answer to a source from before DWCP page format v3",
                  (409, "incompatible_version", "hde_version"),
                  (r.status, r.error.get("code"), r.error.get("field")), repr(r))
        self.unchanged(a, b, vm, ops_a, ops_b, "the request without hde_version")
        r = b.api.post("/v1/migrations/incoming", {"vm": {"name": NAME}, "source": "a",
                                                   "streams": 1, "tls": False,
                                                   "hde_version": M.HDE_VERSION,
                                                   "base_disk": M.base_disk()})
        nc.log("incoming request for plain TCP -> %r" % r)
        expect_eq("B's answer to a source asking for plain TCP", (409, "tls_required"),
                  (r.status, r.error.get("code")), repr(r))
        self.unchanged(a, b, vm, ops_a, ops_b, "the plain TCP request")
        tls = {"tls": True, "fingerprint": "ab" * 32, "hde_version": M.HDE_VERSION}
        for what, extra, want in (
                ("without base_disk (a source from before the check)", {},
                 (409, "incompatible_version", "base_disk")),
                ("with a malformed base_disk", {"base_disk": {"size": 1, "xxh128": "00"}},
                 (400, "invalid_field", "base_disk"))):
            body = {"vm": {"name": NAME, "image": nc.IMAGE}, "source": "a", "streams": 1}
            body.update(tls)
            body.update(extra)
            r = b.api.post("/v1/migrations/incoming", body)
            nc.log("incoming request %s -> %r" % (what, r))
            expect_eq("B's answer to a request %s" % what, want,
                      (r.status, r.error.get("code"), r.error.get("field")), repr(r))
            self.unchanged(a, b, vm, ops_a, ops_b, "the request %s" % what)
        proxy = subprocess.Popen(["ip", "netns", "exec", self.link.ns[1], sys.executable, "-c",
                                  MITM, b.addr, str(MITM_PORT), b.endpoint],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, preexec_fn=nc._die_with_parent)
        self.addCleanup(lambda: (proxy.kill(), proxy.wait(10)))

        def proxy_up():
            r = subprocess.run(["ip", "netns", "exec", self.link.ns[0], sys.executable, "-c",
                                "import socket,sys; socket.create_connection((sys.argv[1], "
                                "int(sys.argv[2])), 1)", b.addr, str(MITM_PORT)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return r.returncode == 0
        nc.poll("the API proxy to listen", proxy_up, 15)
        t = time.monotonic()
        op = a.migrate(NAME, "%s:%d" % (b.addr, MITM_PORT))
        done = a.wait_op(op, 90)
        err = done.get("error") or {}
        nc.log("migrate through the fingerprint-swapping proxy: %s after %.1f s: %r"
               % (done["status"], time.monotonic() - t, err))
        expect_eq("status of a migration whose destination fingerprint was swapped", "failed",
                  done["status"], "operation: %r" % done)
        expect_eq("error code", "peer_key_mismatch", err.get("code"), repr(err))
        if "ab" * 32 not in (err.get("message") or ""):
            fail("the error does not name the fingerprint it expected: %r" % err)
        M.expect_runs_here(a, NAME, pid=vm["pid"], heartbeats=5)
        # B gives up on the streams that never came (its accept timeout).
        nc.poll("B to drop the incoming vm", lambda: b.vm_names() == [], 60)
        M.expect_no_qemu(b)
        watch.check()

        # ---- another base disk under the image's name: refused, nothing made ----
        c = self.node_with_other_base_disk(b)
        ops_a, ops_c = self.ops(a), self.ops(c)
        failed = 'novacron_migrations_total{role="source",result="failed"}'
        failed0 = M.metric(a, failed)
        t = time.monotonic()
        op = a.migrate(NAME, c)
        done = a.wait_op(op, 60)
        err = done.get("error") or {}
        msg = err.get("message") or ""
        nc.log("migrate to a node whose image has another base disk: %s after %.1f s: %r"
               % (done["status"], time.monotonic() - t, err))
        expect_eq("status of a migration to a node with another base disk", "failed",
                  done["status"], "operation: %r" % done)
        expect_eq("error code", "image_mismatch", err.get("code"), repr(err))
        size = str(M.base_disk()["size"])
        for part in ('image "%s"' % nc.IMAGE, size + " bytes", "same size, other content",
                     'register the same base disk file under image "%s"' % nc.IMAGE):
            if part not in msg:
                fail("the image_mismatch error does not say %r: %r" % (part, msg))
        M.expect_runs_here(a, NAME, pid=vm["pid"], heartbeats=5)
        expect_eq("A's %s after a migration refused at prepare" % failed, failed0 + 1,
                  M.metric(a, failed))
        expect_eq("operations on A after the refused migration",
                  sorted(ops_a + [op["id"]]), sorted(self.ops(a)))
        expect_eq("vms on C", [], c.vm_names())
        expect_eq("operations on C", ops_c, self.ops(c))
        M.expect_no_qemu(c)
        if os.path.exists(c.run_dir(NAME)):
            fail("C refused the vm but left its directory %s: %r"
                 % (c.run_dir(NAME), os.listdir(c.run_dir(NAME))))

        # ---- only one side has a base disk; C's cannot be read ----
        with open(nc.IMAGE_JSON) as f:
            img = json.load(f)
        del img["disk"]
        img["name"] = "nc-no-disk"
        c.api.expect(201, "POST", "/v1/images", img)
        other = os.path.join(self.tmp, "other-base.qcow2")
        for what, image, bd, move, want in (
                ("a disk where C's image has none", "nc-no-disk", M.base_disk(), False,
                 (409, "image_mismatch", "base_disk")),
                ("no disk where C's image has one", nc.IMAGE, None, False,
                 (409, "image_mismatch", "base_disk")),
                ("C's base disk gone", nc.IMAGE, M.base_disk(), True,
                 (422, "unprocessable", "base_disk"))):
            if move:
                os.rename(other, other + ".moved")
            body = {"vm": {"name": NAME, "vcpus": 1, "memory_bytes": 256 << 20, "image": image,
                           "nic": "user", "labels": {}, "cmdline_append": ""},
                    "source": "a", "streams": 1, "base_disk": bd}
            body.update(tls)
            r = c.api.post("/v1/migrations/incoming", body)
            nc.log("incoming request with %s -> %r" % (what, r))
            expect_eq("C's answer to a request with %s" % what, want,
                      (r.status, r.error.get("code"), r.error.get("field")), repr(r))
            if image not in r.error.get("message", ""):
                fail("C's refusal does not name image %s: %r" % (image, r))
            expect_eq("vms on C", [], c.vm_names())
            expect_eq("operations on C", ops_c, self.ops(c))
            M.expect_no_qemu(c)
            if os.path.exists(c.run_dir(NAME)):
                fail("C refused the vm but made its directory %s" % c.run_dir(NAME))
        # ---- a prev_record that is not 32 hex digits: 400, nothing made ----
        # (" f" and "+1" pairs are what sscanf's %2x took before)
        for bad in ("zz" * 16, " f" * 16, "+1" * 16, "ab" * 15 + "a", "ab" * 17, 7):
            body = {"vm": {"name": NAME, "vcpus": 1, "memory_bytes": 256 << 20,
                           "image": nc.IMAGE, "nic": "user", "labels": {},
                           "cmdline_append": ""},
                    "source": "a", "streams": 1, "base_disk": M.base_disk(),
                    "prev_record": bad}
            body.update(tls)
            r = c.api.post("/v1/migrations/incoming", body)
            expect_eq("C's answer to prev_record %r" % (bad,),
                      (400, "invalid_field", "prev_record"),
                      (r.status, r.error.get("code"), r.error.get("field")), repr(r))
            expect_eq("vms on C", [], c.vm_names())
        watch.check()

        # ---- a stopped VM: 409 ----
        a.action(NAME, "stop", {"force": True})
        a.wait_state(NAME, "stopped", 30)
        watch.stop()
        ops_a = self.ops(a)
        r = a.api.post("/v1/vms/%s/migrate" % NAME, {"to": c.endpoint})
        nc.log("migrating a stopped vm -> %r" % r)
        expect_eq("migrating a stopped VM", (409, "conflict"), (r.status, r.error.get("code")),
                  repr(r))
        expect_eq("operations on A after refusing the stopped vm", ops_a, self.ops(a))
        expect_eq("state of the stopped vm after the refusal", "stopped", a.vm(NAME)["state"])
        expect_eq("vms on C", [], c.vm_names())

    def node_with_other_base_disk(self, b):
        """Stops B and starts node C at B's address, with the test image
        registered under its name over a copy of its base disk with one byte
        changed (same size). Returns C."""
        with open(nc.IMAGE_JSON) as f:
            img = json.load(f)
        other = os.path.join(self.tmp, "other-base.qcow2")
        shutil.copyfile(img["disk"], other)
        with open(other, "r+b") as f:
            f.seek(os.path.getsize(other) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x5a]))
        ours, theirs = M.base_disk(img["disk"]), M.base_disk(other)
        if ours == theirs:
            fail("the changed copy %s has the identity of %s: %r" % (other, img["disk"], ours))
        b.stop()
        c = M.Node(self.tmp, "c", self.link.ns[1], self.link.addr[1], self.token_file)
        self.daemons.append(c)
        img["disk"] = other
        c.api.expect(201, "POST", "/v1/images", img)
        nc.log("node c at %s: image %s over %s (%r; the source's %r)"
               % (c.endpoint, img["name"], other, theirs, ours))
        return c


if __name__ == "__main__":
    nc.main()
