#!/usr/bin/python3
"""Worker hosts: `novacron cluster join --worker` joins a host that runs no
etcd member (docs/cluster.md), and a join with a wrong token joins nothing.

n1 runs `cluster init` (the one control-plane host). Then:

  (wrong token) n3 runs `cluster join` through n1 with a token of the right
      form but not the cluster's, once with --worker and once without: the
      command fails and its error says the token is wrong (and does not
      send the operator to the API's bearer token); POST /v1/cluster/join
      answers 401 with error field "token". Nothing is half-joined: n3 is
      not in the node list nor anywhere in etcd (/cluster/, /nodes/n3/),
      etcd still has n1 as its only member (no learner left behind), n3
      wrote no cluster.json, cluster.token or etcd directory and runs no
      etcd, and its daemon goes on as the same single node.
  (join) n2 joins with --worker: the command says so; the same daemon
      (same pid) comes back as a member with a valid lease; GET /v1/nodes
      (on n1 and on n2) and `novacron node list` (on the worker) list n2
      ready, control_plane false, not the controller, and n1 control_plane
      and controller; n2 runs no etcd and has no etcd directory, its
      cluster.json says control_plane false with n1's client URL, and etcd
      still has exactly one member.
  (a VM) with n1 cordoned, a VM created through n1 without --node is placed
      by the controller on the worker, and runs there (its record, its
      QEMU, heartbeats), nowhere else.
  (restart) n2's novacrond is stopped (SIGTERM) and started again with the
      same command line, no join: it is back in cluster mode by itself,
      still a ready worker in the node list, still without etcd; the VM ran
      on through the restart (same QEMU, heartbeats continuing) and is
      re-adopted (running, same pid, also when asked through n1).
  (retry) n3, refused earlier, now joins with the right token through the
      worker n2's API: it joins, and the node list has n1 (control plane)
      and the workers n2 and n3, all ready."""

import json
import os
import time

import nc
import nc_cluster as C
import nc_migrate as M
from nc import expect_eq, fail

VM = "w-1"


def wrong_token(token):
    """Same length and alphabet, every character different."""
    return "".join("0123456789abcdef"[(int(c, 16) + 1) % 16] for c in token)


class ClusterJoinWorker(C.ClusterCase):
    switch_tag = "w"

    def rows(self, via):
        return {r["name"]: r for r in via.nodes()}

    def expect_roles(self, via, want, what):
        """via's GET /v1/nodes lists exactly the nodes of want ({name:
        control_plane}), each ready, the control-plane one (n1) the
        controller."""
        rows = self.rows(via)
        got = {n: (r["state"], r.get("control_plane"), r.get("controller"))
               for n, r in rows.items()}
        expect_eq("%s: GET /v1/nodes on %s: name -> (state, control_plane, controller)"
                  % (what, via.name), {n: ("ready", cp, n == "n1") for n, cp in want.items()},
                  got)
        return rows

    def wait_ready_row(self, via, name, timeout=60):
        last = {}

        def ready():
            last["rows"] = self.rows(via)
            r = last["rows"].get(name)
            return r if r and r["state"] == "ready" else None
        try:
            return nc.poll("%s to be ready in %s's node list" % (name, via.name), ready, timeout,
                           interval=0.25)
        except AssertionError as e:
            fail("%s; rows: %s" % (e, json.dumps(last.get("rows"), indent=1)))

    def expect_no_member_here(self, h):
        pids = h.etcd_pids()
        expect_eq("etcd processes of %s" % h.name, [], pids)
        d = os.path.join(h.data, "etcd")
        if os.path.exists(d):
            fail("%s has an etcd directory %s: %r" % (h.name, d, os.listdir(d)))

    def expect_not_joined(self, h, pid, what):
        """h is still the single node it was: same daemon, no cluster
        files, no etcd, and the cluster knows nothing of it."""
        n1 = self.hosts[0]
        if not h.alive() or h.pid != pid:
            fail("%s: %s's novacrond (pid %d) is gone: %s" % (what, h.name, pid, h.log_tail()))
        for f in ("cluster.json", "cluster.token"):
            p = os.path.join(h.data, f)
            if os.path.exists(p):
                fail("%s: %s wrote %s, as if it had joined" % (what, h.name, p))
        self.expect_no_member_here(h)
        r = h.api.get("/v1/cluster")
        expect_eq("%s: GET /v1/cluster on %s (still a single node)" % (what, h.name), 404,
                  r.status, repr(r))
        expect_eq("%s: error code of GET /v1/cluster on %s" % (what, h.name), "not_clustered",
                  r.error.get("code"), repr(r))
        h.api.expect(200, "GET", "/v1/vms")
        expect_eq("%s: nodes in n1's node list" % what, ["n1"], sorted(self.rows(n1)))
        expect_eq("%s: etcd members" % what, [("n1", False)], self.etcd_members())
        keys = [k for k in self.etcd_keys("/cluster/") if h.name in k.split("/")]
        expect_eq("%s: etcd keys under /cluster/ naming %s" % (what, h.name), [], keys)
        expect_eq("%s: etcd keys under /nodes/%s/" % (what, h.name), [],
                  self.etcd_keys("/nodes/%s/" % h.name))

    def test_cluster_join_worker(self):
        n1, n2, n3 = self.start_hosts()
        token = self.init_cluster()
        self.expect_no_member_here(n2)

        # ---- a wrong token: a clear refusal, nothing half-joined ----
        bad = wrong_token(token)
        pid3 = n3.pid
        for worker in (True, False):
            kind = "--worker join" if worker else "control-plane join"
            args = ["cluster", "join", n1.endpoint, "--token", bad, "--address", n3.addr]
            rc, out, err = n3.cli(*(args + (["--worker"] if worker else [])), check=False,
                                  timeout=C.FORM_TIMEOUT_S)
            if rc == 0:
                fail("%s with a wrong token succeeded: %r" % (kind, out))
            if "token" not in err.lower() or "wrong" not in err.lower():
                fail("%s with a wrong token: the error does not say the token is wrong:\n"
                     "  stdout: %s\n  stderr: %s" % (kind, out, err))
            if "bearer" in err or "api.token" in err:
                fail("%s with a wrong cluster token: the error points at the API's bearer "
                     "token, which is not what was wrong:\n  stderr: %s" % (kind, err))
            self.expect_not_joined(n3, pid3, "after a %s with a wrong token" % kind)
        r = n3.api.request("POST", "/v1/cluster/join",
                           {"address": n1.endpoint, "token": bad, "advertise": n3.addr,
                            "control_plane": False}, timeout=90)
        expect_eq("POST /v1/cluster/join with a wrong token: status", 401, r.status, repr(r))
        expect_eq("POST /v1/cluster/join with a wrong token: error field", "token",
                  r.error.get("field"), repr(r))
        self.expect_not_joined(n3, pid3, "after POST /v1/cluster/join with a wrong token")

        # ---- n2 joins as a worker ----
        out = self.join(n2, worker=True)
        if "as a worker" not in out:
            fail("`cluster join --worker` does not say it joined as a worker: %r" % out)
        self.wait_ready_row(n1, "n2")
        want = {"n1": True, "n2": False}
        self.expect_roles(n1, want, "after the worker join")
        self.expect_roles(n2, want, "after the worker join")
        cli_rows = n2.cli("node", "list", json_out=True)
        cli_rows = cli_rows["nodes"] if isinstance(cli_rows, dict) else cli_rows
        expect_eq("`novacron node list -o json` on the worker: name -> (state, control_plane, "
                  "controller)", {"n1": ("ready", True, True), "n2": ("ready", False, False)},
                  {r["name"]: (r["state"], r.get("control_plane"), r.get("controller"))
                   for r in cli_rows})
        _, table, _ = n2.cli("node", "list")
        line = [ln for ln in table.splitlines() if ln.split()[:1] == ["n2"]]
        if len(line) != 1 or "ready" not in line[0].split():
            fail("`novacron node list` on the worker has no ready row for n2:\n%s" % table)
        st = n2.cluster()
        expect_eq("GET /v1/cluster on the worker: (node, controller, lease_valid)",
                  ("n2", "n1", True), (st["node"], st["controller"], st["lease_valid"]))
        self.expect_no_member_here(n2)
        with open(os.path.join(n2.data, "cluster.json")) as f:
            boot = json.load(f)
        expect_eq("control_plane in n2's cluster.json", False, boot.get("control_plane"))
        expect_eq("endpoints in n2's cluster.json (n1's member only)",
                  ["http://%s:2379" % n1.addr], boot.get("endpoints"))
        expect_eq("etcd members after the worker join", [("n1", False)], self.etcd_members())
        node_rec = self.etcd_json("/cluster/nodes/n2")
        expect_eq("control_plane of /cluster/nodes/n2 in etcd", False,
                  node_rec and node_rec.get("control_plane"), "record: %r" % node_rec)

        # ---- the controller places a VM on the worker ----
        n1.cli("node", "cordon", "n1")
        ex = n1.explain({"name": VM, "image": nc.IMAGE, "memory": "256M"})
        expect_eq("explain with n1 cordoned: the host", "n2", ex.get("host"), "explain: %r" % ex)
        ans = n1.create(VM)
        expect_eq("create %s with n1 cordoned: node" % VM, "n2", ans.get("node"),
                  "answer: %r" % ans)
        h, hb = self.wait_runs_on(VM, n1)
        expect_eq("node running %s" % VM, "n2", h.name)
        v = self.expect_running_here(n2, VM)
        self.expect_not_local(VM, [n1, n3])
        pid = v["pid"]
        M.wait_new_heartbeats(n2, VM, 5)
        n1.cli("node", "uncordon", "n1")
        nc.log("%s runs on the worker n2 (QEMU pid %d), heartbeat seq %d" % (VM, pid, hb.seq))

        # ---- the worker's daemon restarts on its own ----
        old_pid = n2.pid
        serial = n2.serial(VM)
        n2.stop()
        nc.log("node n2: novacrond pid %d stopped (SIGTERM)" % old_pid)
        last = serial.last()
        if not nc.pid_alive(pid):
            fail("%s's QEMU pid %d died with the worker's novacrond" % (VM, pid))
        serial.wait_heartbeat(after_seq=last.seq, timeout=10)
        n2.start(timeout=60)
        self.wait_clustered(n2, time.monotonic())
        if n2.pid == old_pid:
            fail("node n2: the restarted novacrond has the old pid %d" % old_pid)
        self.wait_ready_row(n1, "n2")
        self.expect_roles(n1, want, "after the worker's restart")
        self.expect_roles(n2, want, "after the worker's restart")
        self.expect_no_member_here(n2)
        expect_eq("etcd members after the worker's restart", [("n1", False)],
                  self.etcd_members())
        v = n2.wait_state(VM, "running", 30)
        expect_eq("QEMU pid of %s after the worker's restart (re-adopted)" % VM, pid, v["pid"])
        expect_eq("QEMUs of %s on n2" % VM, [pid], nc.qemu_pids_for(n2.run_dir(VM) + os.sep))
        fwd = n1.api.expect(200, "GET", "/v1/vms/" + VM).json
        expect_eq("GET /v1/vms/%s through n1 (forwarded to the worker): (state, pid)" % VM,
                  ("running", pid), (fwd["state"], fwd["pid"]))
        expect_eq("node of %s in the cluster" % VM, "n2", self.where(VM, n1))
        M.wait_new_heartbeats(n2, VM, 5)
        hbs = serial.heartbeats()
        nc.expect_increasing("heartbeats of %s across the worker's restart" % VM, hbs, step=1)
        expect_eq("NCREADY lines in %s's serial log (booted once)" % VM, 1,
                  serial.read().count(b"NCREADY"))

        # ---- the refused host retries, through the worker ----
        out = self.join(n3, worker=True, through=n2)
        if "as a worker" not in out:
            fail("`cluster join --worker` of n3 does not say it joined as a worker: %r" % out)
        self.wait_ready_row(n1, "n3")
        want["n3"] = False
        for h in (n1, n2, n3):
            self.expect_roles(h, want, "after n3 joined")
        self.expect_no_member_here(n3)
        expect_eq("etcd members at the end", [("n1", False)], self.etcd_members())
        self.expect_running_here(n2, VM)
        print("JOIN WORKER: a wrong token refused twice (worker and control plane), nothing "
              "half-joined; n2 joined as a worker, ran %s placed by the controller, restarted "
              "(pid %d -> %d) and stayed a member with the VM re-adopted (QEMU %d); n3 then "
              "joined through the worker" % (VM, old_pid, n2.pid, pid), flush=True)


if __name__ == "__main__":
    nc.main()
