#!/usr/bin/python3
"""Malformed and refused requests, as a table: each gets the documented
status and error code (and field, where one is to blame), a JSON error
body with a message, and none of them changes any state: the VM list, the
image list, the operation list and the data directory are the same before
and after, and the same daemon process still answers /healthz.

No guest is booted: every VM here stays defined."""

import json
import os

import nc
from nc import expect_eq, fail

BIG = 64 * 1024


class Raw:
    """A body sent as these bytes, with this Content-Type (None: none)."""

    def __init__(self, data, ctype="application/json", chunked=False):
        self.data, self.ctype, self.chunked = data, ctype, chunked

    def __repr__(self):
        d = self.data if len(self.data) < 60 else self.data[:60] + b"...(%d bytes)" % len(
            self.data)
        return "Raw(%r, %r%s)" % (d, self.ctype, ", chunked" if self.chunked else "")


def vm_body(**kw):
    body = {"name": "new-1", "image": nc.IMAGE, "memory": "256M"}
    body.update(kw)
    return {k: v for k, v in body.items() if v is not DROP}


DROP = object()
ANY = "(not checked)"

# (what, client, method, path, body, status, code, field)
# client: "unix"; "tcp" (good token); "tcp-none", "tcp-bad", "tcp-longer", "tcp-basic".
# {op} is a finished operation's id; "exists" is a defined (never started) VM.
CASES = [
    # -- bodies that are not a JSON object --
    ("bad JSON", "unix", "POST", "/v1/vms", Raw(b'{"name": "x",'), 400, "bad_json", ANY),
    ("JSON array body", "unix", "POST", "/v1/vms", Raw(b'[{"name": "x"}]'), 400, "bad_json", ANY),
    ("JSON string body", "unix", "POST", "/v1/vms", Raw(b'"x"'), 400, "bad_json", ANY),
    ("JSON null body", "unix", "POST", "/v1/vms", Raw(b"null"), 400, "bad_json", ANY),
    ("empty body on create", "unix", "POST", "/v1/vms", None, 400, "bad_json", ANY),
    ("duplicate keys", "unix", "POST", "/v1/vms",
     Raw(b'{"name": "dup-1", "name": "dup-2", "image": "nc-test"}'), 400, "bad_json", ANY),
    ("invalid UTF-8", "unix", "POST", "/v1/vms",
     Raw(b'{"name": "x\xff\xfe", "image": "nc-test"}'), 400, "bad_json", ANY),
    ("10000-deep nesting", "unix", "POST", "/v1/vms",
     Raw(b'{"labels": ' + b"[" * 10000 + b"]" * 10000 + b"}"), 400, "bad_json", ANY),
    ("body over 64 KiB", "unix", "POST", "/v1/vms",
     vm_body(cmdline_append="x" * (BIG + 1)), 413, "too_large", ANY),
    ("chunked body over 64 KiB", "unix", "POST", "/v1/vms",
     Raw(json.dumps(vm_body(cmdline_append="y" * (BIG + 1))).encode(), chunked=True),
     413, "too_large", ANY),
    ("text/plain body", "unix", "POST", "/v1/vms",
     Raw(json.dumps(vm_body()).encode(), "text/plain"), 415, "unsupported_media_type", ANY),
    ("body without Content-Type", "unix", "POST", "/v1/vms",
     Raw(json.dumps(vm_body()).encode(), None), 415, "unsupported_media_type", ANY),
    ("form body on an action", "unix", "POST", "/v1/vms/exists/start",
     Raw(b"force=true", "application/x-www-form-urlencoded"), 415, "unsupported_media_type", ANY),
    # -- names --
    ("name ../x", "unix", "POST", "/v1/vms", vm_body(name="../x"), 400, "invalid_field", "name"),
    ("name a/b", "unix", "POST", "/v1/vms", vm_body(name="a/b"), 400, "invalid_field", "name"),
    ("name A", "unix", "POST", "/v1/vms", vm_body(name="A"), 400, "invalid_field", "name"),
    ("name -x", "unix", "POST", "/v1/vms", vm_body(name="-x"), 400, "invalid_field", "name"),
    ("name x-", "unix", "POST", "/v1/vms", vm_body(name="x-"), 400, "invalid_field", "name"),
    ("name of 300 characters", "unix", "POST", "/v1/vms", vm_body(name="a" * 300),
     400, "invalid_field", "name"),
    ("empty name", "unix", "POST", "/v1/vms", vm_body(name=""), 400, "invalid_field", "name"),
    # jansson refuses \u0000 in strings, so this is malformed JSON already.
    ("name with a NUL", "unix", "POST", "/v1/vms", vm_body(name="ab\u0000c"),
     400, "bad_json", ANY),
    ("name is a number", "unix", "POST", "/v1/vms", vm_body(name=5), 400, "invalid_field", "name"),
    ("missing name", "unix", "POST", "/v1/vms", vm_body(name=DROP), 400, "missing_field", "name"),
    # -- image --
    ("unknown image", "unix", "POST", "/v1/vms", vm_body(image="no-such-image"),
     422, "unprocessable", "image"),
    ("image is a number", "unix", "POST", "/v1/vms", vm_body(image=7),
     400, "invalid_field", "image"),
    ("missing image", "unix", "POST", "/v1/vms", vm_body(image=DROP),
     400, "missing_field", "image"),
    # -- memory --
    ("memory -1", "unix", "POST", "/v1/vms", vm_body(memory=-1), 400, "invalid_field", "memory"),
    ("memory 0", "unix", "POST", "/v1/vms", vm_body(memory=0), 400, "invalid_field", "memory"),
    ("memory \"0\"", "unix", "POST", "/v1/vms", vm_body(memory="0"),
     400, "invalid_field", "memory"),
    ("memory \"-256M\"", "unix", "POST", "/v1/vms", vm_body(memory="-256M"),
     400, "invalid_field", "memory"),
    ("memory \"2T\" (over the 1T limit)", "unix", "POST", "/v1/vms", vm_body(memory="2T"),
     400, "invalid_field", "memory"),
    ("memory that overflows 64 bits", "unix", "POST", "/v1/vms",
     vm_body(memory="99999999999999999999G"), 400, "invalid_field", "memory"),
    ("memory \"12X\"", "unix", "POST", "/v1/vms", vm_body(memory="12X"),
     400, "invalid_field", "memory"),
    ("memory \"\"", "unix", "POST", "/v1/vms", vm_body(memory=""), 400, "invalid_field", "memory"),
    ("memory 1.5", "unix", "POST", "/v1/vms", vm_body(memory=1.5), 400, "invalid_field", "memory"),
    ("memory true", "unix", "POST", "/v1/vms", vm_body(memory=True),
     400, "invalid_field", "memory"),
    ("memory 8M (under 16M)", "unix", "POST", "/v1/vms", vm_body(memory="8M"),
     400, "invalid_field", "memory"),
    # -- vcpus --
    ("vcpus 0", "unix", "POST", "/v1/vms", vm_body(vcpus=0), 400, "invalid_field", "vcpus"),
    ("vcpus 65", "unix", "POST", "/v1/vms", vm_body(vcpus=65), 400, "invalid_field", "vcpus"),
    ("vcpus -1", "unix", "POST", "/v1/vms", vm_body(vcpus=-1), 400, "invalid_field", "vcpus"),
    ("vcpus \"2\"", "unix", "POST", "/v1/vms", vm_body(vcpus="2"), 400, "invalid_field", "vcpus"),
    ("vcpus 1.5", "unix", "POST", "/v1/vms", vm_body(vcpus=1.5), 400, "invalid_field", "vcpus"),
    ("vcpus null", "unix", "POST", "/v1/vms", vm_body(vcpus=None), 400, "invalid_field", "vcpus"),
    # -- other fields --
    ("start \"yes\"", "unix", "POST", "/v1/vms", vm_body(start="yes"),
     400, "invalid_field", "start"),
    ("labels a string", "unix", "POST", "/v1/vms", vm_body(labels="app=web"),
     400, "invalid_field", "labels"),
    ("label value a number", "unix", "POST", "/v1/vms", vm_body(labels={"app": 1}),
     400, "invalid_field", "labels"),
    ("nic bridge", "unix", "POST", "/v1/vms", vm_body(nic="bridge"), 400, "invalid_field", "nic"),
    ("cmdline_append a number", "unix", "POST", "/v1/vms", vm_body(cmdline_append=5),
     400, "invalid_field", "cmdline_append"),
    ("cmdline_append with a newline", "unix", "POST", "/v1/vms",
     vm_body(cmdline_append="quiet\ninit=/bin/sh"), 400, "invalid_field", "cmdline_append"),
    ("unknown field", "unix", "POST", "/v1/vms", vm_body(colour="blue"),
     400, "unknown_field", "colour"),
    ("duplicate create", "unix", "POST", "/v1/vms", vm_body(name="exists"),
     409, "conflict", "name"),
    # -- VMs and actions --
    ("GET a missing vm", "unix", "GET", "/v1/vms/nope", None, 404, "not_found", ANY),
    ("start a missing vm", "unix", "POST", "/v1/vms/nope/start", None, 404, "not_found", ANY),
    ("delete a missing vm", "unix", "DELETE", "/v1/vms/nope", None, 404, "not_found", ANY),
    ("unknown action", "unix", "POST", "/v1/vms/exists/explode", None, 404, "not_found", ANY),
    ("unknown route", "unix", "GET", "/v1/nothing", None, 404, "not_found", ANY),
    ("pause a defined vm", "unix", "POST", "/v1/vms/exists/pause", None, 409, "conflict", ANY),
    ("pause with an unknown field", "unix", "POST", "/v1/vms/exists/pause", {"now": True},
     400, "unknown_field", "now"),
    ("stop with force \"yes\"", "unix", "POST", "/v1/vms/exists/stop", {"force": "yes"},
     400, "invalid_field", "force"),
    ("stop with timeout_s 0", "unix", "POST", "/v1/vms/exists/stop", {"timeout_s": 0},
     400, "invalid_field", "timeout_s"),
    ("console tail_bytes -1", "unix", "GET", "/v1/vms/exists/console?tail_bytes=-1", None,
     400, "invalid_field", "tail_bytes"),
    ("console of a missing vm", "unix", "GET", "/v1/vms/nope/console", None,
     404, "not_found", ANY),
    # -- wrong methods --
    ("PUT /v1/vms", "unix", "PUT", "/v1/vms", vm_body(), 405, "method_not_allowed", ANY),
    ("PATCH a vm", "unix", "PATCH", "/v1/vms/exists", {"vcpus": 2}, 405, "method_not_allowed", ANY),
    ("GET an action", "unix", "GET", "/v1/vms/exists/start", None, 405, "method_not_allowed", ANY),
    ("DELETE /v1/images", "unix", "DELETE", "/v1/images", None, 405, "method_not_allowed", ANY),
    ("POST /healthz", "unix", "POST", "/healthz", None, 405, "method_not_allowed", ANY),
    # -- the token on TCP --
    ("TCP without a token", "tcp-none", "GET", "/v1/vms", None, 401, "unauthorized", ANY),
    ("TCP with a wrong token", "tcp-bad", "GET", "/v1/vms", None, 401, "unauthorized", ANY),
    ("TCP with the token plus a character", "tcp-longer", "GET", "/v1/vms", None,
     401, "unauthorized", ANY),
    ("TCP with the token as Basic", "tcp-basic", "GET", "/v1/vms", None,
     401, "unauthorized", ANY),
    ("TCP create without a token", "tcp-none", "POST", "/v1/vms", vm_body(name="sneaky"),
     401, "unauthorized", ANY),
    ("TCP missing vm without a token (no existence leak)", "tcp-none", "GET", "/v1/vms/nope",
     None, 401, "unauthorized", ANY),
    ("TCP events without a token", "tcp-none", "GET", "/v1/events", None,
     401, "unauthorized", ANY),
    ("TCP with the token, bad JSON", "tcp", "POST", "/v1/vms", Raw(b"{"), 400, "bad_json", ANY),
    # -- operations --
    ("wait_s abc", "unix", "GET", "/v1/operations/{op}?wait_s=abc", None,
     400, "invalid_field", "wait_s"),
    ("wait_s -1", "unix", "GET", "/v1/operations/{op}?wait_s=-1", None,
     400, "invalid_field", "wait_s"),
    ("wait_s 301", "unix", "GET", "/v1/operations/{op}?wait_s=301", None,
     400, "invalid_field", "wait_s"),
    ("wait_s 1.5", "unix", "GET", "/v1/operations/{op}?wait_s=1.5", None,
     400, "invalid_field", "wait_s"),
    ("unknown operation", "unix", "GET", "/v1/operations/op-0000000000000000", None,
     404, "not_found", ANY),
    ("cancel an unknown operation", "unix", "POST", "/v1/operations/op-0000000000000000/cancel",
     None, 404, "not_found", ANY),
    ("cancel a finished operation", "unix", "POST", "/v1/operations/{op}/cancel", None,
     409, "conflict", ANY),
    # -- snapshots --
    ("snapshot name Bad/1", "unix", "POST", "/v1/vms/exists/snapshots", {"name": "Bad/1"},
     400, "invalid_field", "name"),
    ("snapshot name ../s", "unix", "POST", "/v1/vms/exists/snapshots", {"name": "../s"},
     400, "invalid_field", "name"),
    ("empty snapshot name", "unix", "POST", "/v1/vms/exists/snapshots", {"name": ""},
     400, "invalid_field", "name"),
    ("snapshot without a name", "unix", "POST", "/v1/vms/exists/snapshots", {},
     400, "missing_field", "name"),
    ("snapshot with an unknown field", "unix", "POST", "/v1/vms/exists/snapshots",
     {"name": "s1", "memory": False}, 400, "unknown_field", "memory"),
    ("snapshot of a defined vm", "unix", "POST", "/v1/vms/exists/snapshots", {"name": "s1"},
     409, "conflict", ANY),
    ("snapshot of a missing vm", "unix", "POST", "/v1/vms/nope/snapshots", {"name": "s1"},
     404, "not_found", ANY),
    ("restore a missing snapshot", "unix", "POST", "/v1/vms/exists/snapshots/s1/restore", None,
     404, "not_found", ANY),
    ("delete a missing snapshot", "unix", "DELETE", "/v1/vms/exists/snapshots/s1", None,
     404, "not_found", ANY),
    ("list snapshots of a missing vm", "unix", "GET", "/v1/vms/nope/snapshots", None,
     404, "not_found", ANY),
    # -- clone --
    ("clone without a name", "unix", "POST", "/v1/vms/exists/clone", {"start": True},
     400, "missing_field", "name"),
    ("clone to name B", "unix", "POST", "/v1/vms/exists/clone", {"name": "B"},
     400, "invalid_field", "name"),
    ("clone with start \"x\"", "unix", "POST", "/v1/vms/exists/clone",
     {"name": "copy-1", "start": "x"}, 400, "invalid_field", "start"),
    ("clone a missing vm", "unix", "POST", "/v1/vms/nope/clone", {"name": "copy-1"},
     404, "not_found", ANY),
    ("clone onto an existing vm", "unix", "POST", "/v1/vms/exists/clone", {"name": "exists"},
     409, "conflict", "name"),
    # -- images --
    ("image with a relative kernel path", "unix", "POST", "/v1/images",
     {"name": "img-1", "kernel": "guest/vmlinux"}, 400, "invalid_field", "kernel"),
    ("image with a /../ kernel path", "unix", "POST", "/v1/images",
     {"name": "img-1", "kernel": "/tmp/../etc/passwd"}, 400, "invalid_field", "kernel"),
    ("image with a missing kernel file", "unix", "POST", "/v1/images",
     {"name": "img-1", "kernel": "/nonexistent/vmlinux"}, 422, "unprocessable", "kernel"),
    ("image with a directory as kernel", "unix", "POST", "/v1/images",
     {"name": "img-1", "kernel": "/tmp"}, 422, "unprocessable", "kernel"),
    ("image with a missing initrd", "unix", "POST", "/v1/images",
     {"name": "img-1", "kernel": "{kernel}", "initrd": "/nonexistent/initrd"},
     422, "unprocessable", "initrd"),
    ("image with a relative disk", "unix", "POST", "/v1/images",
     {"name": "img-1", "disk": "base.qcow2"}, 400, "invalid_field", "disk"),
    ("image without kernel or disk", "unix", "POST", "/v1/images", {"name": "img-1"},
     400, "missing_field", "kernel"),
    ("image without a name", "unix", "POST", "/v1/images", {"kernel": "{kernel}"},
     400, "missing_field", "name"),
    ("image name Bad", "unix", "POST", "/v1/images", {"name": "Bad", "kernel": "{kernel}"},
     400, "invalid_field", "name"),
    ("image with an unknown field", "unix", "POST", "/v1/images",
     {"name": "img-1", "kernel": "{kernel}", "arch": "riscv"}, 400, "unknown_field", "arch"),
    ("image name taken", "unix", "POST", "/v1/images", {"name": nc.IMAGE, "kernel": "{kernel}"},
     409, "conflict", "name"),
]


def substitute(obj, subst):
    """Replaces {op}/{kernel} placeholders in strings inside obj."""
    if isinstance(obj, str):
        for k, v in subst.items():
            obj = obj.replace("{%s}" % k, v)
        return obj
    if isinstance(obj, dict):
        return {k: substitute(v, subst) for k, v in obj.items()}
    if isinstance(obj, list):
        return [substitute(v, subst) for v in obj]
    return obj


class BadInput(nc.TestCase):
    def state(self, d):
        vms = d.api.expect(200, "GET", "/v1/vms").json
        images = d.api.expect(200, "GET", "/v1/images").json
        ops = d.api.expect(200, "GET", "/v1/operations").json
        files = sorted(os.path.relpath(os.path.join(dp, f), d.data)
                       for dp, _, fs in os.walk(os.path.join(d.data, "vms")) for f in fs)
        dirs = sorted(os.listdir(os.path.join(d.data, "vms")))
        return {"vms": vms, "images": images, "operations": ops, "vm dirs": dirs,
                "vm files": files}

    def test_bad_input_table(self):
        if len(CASES) < 35:
            fail("the table should have at least 35 cases, it has %d" % len(CASES))
        d = self.start_daemon()
        img = d.register_image()
        d.create_vm("exists", start=False, labels={"keep": "me"})
        # A finished operation: define and delete a throwaway VM.
        d.create_vm("throwaway", start=False)
        op = d.op_ok(d.api.expect(202, "DELETE", "/v1/vms/throwaway"))
        subst = {"op": op["id"], "kernel": img["kernel"]}
        clients = {
            "unix": d.api,
            "tcp": d.tcp(d.token),
            "tcp-none": d.tcp(None),
            "tcp-bad": d.tcp("0" * 64),
            "tcp-longer": d.tcp(d.token + "0"),
            "tcp-basic": d.tcp(None),
        }
        pid = d.pid
        before = self.state(d)
        # The right token is accepted on TCP, and it sees what the socket sees.
        expect_eq("GET /v1/vms over TCP with the token", before["vms"],
                  clients["tcp"].expect(200, "GET", "/v1/vms").json)

        problems = []
        for what, client, method, path, body, status, code, field in CASES:
            path = substitute(path, subst)
            kw = {}
            if client == "tcp-basic":
                kw["headers"] = {"Authorization": "Basic " + d.token}
            if isinstance(body, Raw):
                kw.update(raw=body.data, content_type=body.ctype, chunked=body.chunked)
            elif body is not None:
                kw["body"] = substitute(body, subst)
            try:
                r = clients[client].request(method, path, **kw)
            except OSError as e:
                problems.append("%s: %s %s: no answer: %r" % (what, method, path, e))
                if not d.alive():
                    break
                continue
            got = (r.status, r.error.get("code"))
            want = (status, code)
            if field is not ANY:
                got += (r.error.get("field"),)
                want += (field,)
            if got != want:
                problems.append("%s: expected %r, got %r\n      %r" % (what, want, got, r))
            elif not r.headers.get("Content-Type", "").startswith("application/json"):
                problems.append("%s: error answer with Content-Type %r"
                                % (what, r.headers.get("Content-Type")))
            elif not isinstance(r.error.get("message"), str) or not r.error["message"]:
                problems.append("%s: error without a message: %r" % (what, r))
            if not d.alive():
                problems.append("novacrond died after %r (status %r)" % (what, d.proc.returncode))
                break
        nc.log("%d cases, %d problems" % (len(CASES), len(problems)))

        expect_eq("daemon pid after the table", pid, d.pid if d.alive() else None)
        r = d.api.get("/healthz")
        expect_eq("/healthz after the table", (200, "ok"), (r.status, r.text.strip()))
        after = self.state(d)
        for k in before:
            if before[k] != after[k]:
                problems.append("bad input changed %s:\n  before %s\n  after  %s"
                                % (k, json.dumps(before[k], sort_keys=True),
                                   json.dumps(after[k], sort_keys=True)))
        if problems:
            fail("%d of %d bad-input checks failed:\n  - %s"
                 % (len(problems), len(CASES), "\n  - ".join(problems)))


if __name__ == "__main__":
    nc.main()
