#!/usr/bin/python3
"""Refused and failing migration requests.

Malformed bodies (missing or bad "to", an unknown field, a bad mode,
streams out of 1..16, other fields out of range, wrong types) get 400 with
the documented code and field, create no operation and change nothing: the
VM keeps running on A with the same QEMU, B has nothing. A VM that does
not exist is 404; a stopped one is 409. A migration to an address where no
node answers is accepted (202) and its operation fails, naming the
address, while the VM keeps running. The CLI reports the same refusals
with the documented exit statuses."""

import subprocess
import time

import nc
import nc_migrate as M
from nc import expect_eq, fail

NAME = "mig-bad"
ANY = object()

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

        # ---- a stopped VM: 409 ----
        a.action(NAME, "stop", {"force": True})
        a.wait_state(NAME, "stopped", 30)
        watch.stop()
        ops_a = self.ops(a)
        r = a.api.post("/v1/vms/%s/migrate" % NAME, {"to": b.endpoint})
        nc.log("migrating a stopped vm -> %r" % r)
        expect_eq("migrating a stopped VM", (409, "conflict"), (r.status, r.error.get("code")),
                  repr(r))
        expect_eq("operations on A after refusing the stopped vm", ops_a, self.ops(a))
        expect_eq("state of the stopped vm after the refusal", "stopped", a.vm(NAME)["state"])
        expect_eq("vms on B", [], b.vm_names())


if __name__ == "__main__":
    nc.main()
