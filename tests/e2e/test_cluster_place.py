#!/usr/bin/python3
"""A three-host cluster formed with `novacron cluster init` and `cluster
join`, and where the controller places VMs.

Three single-node daemons in their own network namespaces become one
cluster: init on n1, join on n2 and n3 (each daemon re-execs itself, same
pid). Then, from different hosts:

  - the node list shows three ready nodes, exactly one of them the
    controller, every one with the test image;
  - a VM created without --node lands on the node POST
    /v1/placement/explain ranks first (pack policy), runs there (its own
    record, its QEMU, heartbeats) and nowhere else;
  - two VMs of one hard anti-affinity group (the CLI's --anti-affinity)
    land on different nodes, and a third member would be refused on both
    by the anti_affinity filter;
  - a cordoned node gets no new VM: explain rejects it with filter
    "state", a VM created meanwhile goes elsewhere, and pinning one to it
    is refused; after uncordon it is ready and fits again;
  - `vm create --node` pins a VM to a node pack would not have picked,
    and it runs there; `vm stop` of it on another host is forwarded to
    its node, where it stops and stays stopped."""

import time

import nc
import nc_cluster as C
from nc import expect_eq, fail


def fit_hosts(ex):
    return [h["host"] for h in ex["hosts"] if h.get("fit")]


def rejected(ex, host):
    for h in ex["hosts"]:
        if h["host"] == host:
            return None if h.get("fit") else h
    fail("explain lists no host %r: %r" % (host, ex))


class ClusterPlace(C.ClusterCase):
    switch_tag = "p"

    def test_cluster_form_and_place(self):
        n1, n2, n3 = self.start_hosts()
        took = self.form()

        # ---- the cluster as each host sees it ----
        for h in (n1, n2, n3):
            st = h.cluster()
            expect_eq("node %s: GET /v1/cluster node" % h.name, h.name, st["node"])
            expect_eq("node %s: nodes_total" % h.name, 3, st["nodes_total"])
            expect_eq("node %s: nodes_alive" % h.name, 3, st["nodes_alive"])
        rows = n3.cli("node", "list", json_out=True)
        rows = rows["nodes"] if isinstance(rows, dict) else rows
        expect_eq("node list (CLI on n3): names and states",
                  [("n1", "ready"), ("n2", "ready"), ("n3", "ready")],
                  sorted((r["name"], r["state"]) for r in rows))
        ctl = [r["name"] for r in rows if r.get("controller")]
        expect_eq("controllers in the node list", 1, len(ctl), "rows: %r" % rows)
        for r in rows:
            if not r.get("control_plane"):
                fail("node %s joined as a control-plane host but the node list says "
                     "control_plane %r" % (r["name"], r.get("control_plane")))
            if r.get("api") != self.host(r["name"]).endpoint:
                fail("node %s: api %r, expected %r" % (r["name"], r.get("api"),
                                                       self.host(r["name"]).endpoint))
        for h in (n1, n2, n3):
            expect_eq("node %s: etcd member processes" % h.name, 1, len(h.etcd_pids()))
            expect_eq("node %s: fence guard processes" % h.name, 1, len(h.guard_pids()))
        nc.log("formed in %.1f s; controller %s" % (took, ctl[0]))

        # ---- no --node: the node explain ranks first ----
        body = {"name": "p-1", "image": nc.IMAGE, "memory": "256M", "start": True}
        ex = n2.explain(body)
        if not ex.get("placed") or not ex.get("host"):
            fail("explain of p-1 places it nowhere: %r" % ex)
        first = [h for h in ex["hosts"] if h.get("rank") == 1]
        expect_eq("explain: the rank-1 host is the chosen one", [ex["host"]],
                  [h["host"] for h in first], "explain: %r" % ex)
        expect_eq("explain: every node fits an empty cluster", ["n1", "n2", "n3"],
                  sorted(fit_hosts(ex)), "explain: %r" % ex)
        expect_eq("explain mode", "pack", ex.get("mode"))
        ans = n2.create("p-1")
        expect_eq("create p-1 (via n2): node", ex["host"], ans["node"], "answer: %r" % ans)
        h1, hb = self.wait_runs_on("p-1", n2)
        expect_eq("node running p-1", ex["host"], h1.name)
        v = self.expect_running_here(h1, "p-1")
        self.expect_not_local("p-1", [h for h in self.hosts if h is not h1])
        nc.log("p-1 runs on %s (explain ranked it first, score %s), heartbeat seq %d"
               % (h1.name, first[0].get("score"), hb.seq))
        # pack: the next VM goes where p-1 already uses capacity
        ex2 = n3.explain({"name": "p-2", "image": nc.IMAGE, "memory": "256M"})
        scores = {h["host"]: h.get("score") for h in ex2["hosts"] if h.get("fit")}
        expect_eq("explain of a next VM (pack): the host", h1.name, ex2["host"],
                  "scores: %r" % scores)
        if any(scores[n] >= scores[h1.name] for n in scores if n != h1.name):
            fail("pack: %s, which runs p-1, should score above the empty nodes: %r"
                 % (h1.name, scores))
        # a request for it on another host is forwarded to its owner
        fwd = [h for h in self.hosts if h is not h1][0]
        got = fwd.api.expect(200, "GET", "/v1/vms/p-1").json
        expect_eq("GET /v1/vms/p-1 on %s (forwarded): state" % fwd.name, "running", got["state"])
        expect_eq("GET /v1/vms/p-1 on %s (forwarded): pid" % fwd.name, v["pid"], got["pid"])

        # ---- hard anti-affinity: two members, two nodes ----
        aa_nodes = []
        for i, via in ((1, n1), (2, n3)):
            out = via.cli("vm", "create", "aa-%d" % i, "--image", nc.IMAGE, "--memory", "256M",
                          "--anti-affinity", "web", json_out=True)
            aa_nodes.append(self.wait_defined("aa-%d" % i, via))
            if isinstance(out, dict) and out.get("node") not in (None, aa_nodes[-1]):
                fail("CLI said aa-%d goes to %r, the cluster has it on %r"
                     % (i, out.get("node"), aa_nodes[-1]))
        if aa_nodes[0] == aa_nodes[1]:
            fail("aa-1 and aa-2 share hard anti-affinity group web (host scope) but both "
                 "landed on %s" % aa_nodes[0])
        ex = n1.explain({"name": "aa-3", "image": nc.IMAGE, "memory": "256M",
                         "placement": {"groups": [{"name": "web", "policy": "anti-affinity",
                                                   "scope": "host", "hard": True}]}})
        for n in aa_nodes:
            r = rejected(ex, n)
            if not r or r.get("filter") != "anti_affinity":
                fail("explain of a third member of web: %s should be rejected by filter "
                     "anti_affinity, got %r" % (n, r))
        third = [n for n in ("n1", "n2", "n3") if n not in aa_nodes]
        expect_eq("explain of a third member of web: the only fit", third, fit_hosts(ex))
        nc.log("anti-affinity: aa-1 on %s, aa-2 on %s; a third would go to %s"
               % (aa_nodes[0], aa_nodes[1], third[0]))

        # ---- cordon: nothing new lands there ----
        body = {"name": "c-1", "image": nc.IMAGE, "memory": "256M", "start": False}
        target = n1.explain(body)["host"]  # where c-1 would go now
        tgt = self.host(target)
        other = [h for h in self.hosts if h is not tgt][0]
        other.cli("node", "cordon", target)
        expect_eq("node list state of %s after cordon" % target, "cordoned",
                  n1.node_row(target)["state"])
        ex = n2.explain(body)
        r = rejected(ex, target)
        if not r or r.get("filter") != "state" or "cordon" not in (r.get("reason") or ""):
            fail("explain with %s cordoned: expected filter 'state' (cordoned) for it, got %r"
                 % (target, r))
        if ex["host"] == target:
            fail("explain picks the cordoned node %s: %r" % (target, ex))
        ans = n3.create("c-1", start=False)
        got = self.wait_defined("c-1", n3)
        if got == target:
            fail("c-1 was placed on the cordoned node %s" % target)
        expect_eq("c-1's node (explain's pick while %s is cordoned)" % target, ex["host"], got)
        # pinning to a cordoned node is refused: the filters still apply
        r = n3.api.request("POST", "/v1/vms", {"name": "c-2", "image": nc.IMAGE,
                                               "memory": "256M", "node": target})
        if r.status not in (409, 422):
            fail("create c-2 pinned to the cordoned node %s: expected 422 (no node fits), got "
                 "%r" % (target, r))
        if "c-2" in n1.cluster_vms():
            fail("the refused c-2 is still in the cluster's vm list: %r" % n1.cluster_vms()["c-2"])
        self.expect_not_local("c-2", self.hosts)
        nc.log("cordoned %s: explain says %r; c-1 went to %s; pinning c-2 there: %d %s"
               % (target, r_reason(rejected(ex, target)), got, r.status,
                  r.error.get("message")))
        other.cli("node", "uncordon", target)
        expect_eq("node list state of %s after uncordon" % target, "ready",
                  n1.node_row(target)["state"])
        ex = n2.explain({"name": "c-3", "image": nc.IMAGE, "memory": "256M"})
        if target not in fit_hosts(ex):
            fail("after uncordon, explain still rejects %s: %r" % (target, rejected(ex, target)))

        # ---- --node pins, even where pack would not go ----
        ex = n1.explain({"name": "pin-1", "image": nc.IMAGE, "memory": "256M"})
        pin = [n for n in ("n3", "n2", "n1") if n != ex["host"]][0]
        t = time.monotonic()
        out = n1.cli("vm", "create", "pin-1", "--image", nc.IMAGE, "--memory", "256M",
                     "--node", pin, "--start", json_out=True)
        hp, hb = self.wait_runs_on("pin-1", n2)
        expect_eq("node running pin-1 (pinned with --node %s; pack would pick %s)"
                  % (pin, ex["host"]), pin, hp.name)
        if isinstance(out, dict) and out.get("node") not in (None, pin):
            fail("CLI said pin-1 is on %r, pinned to %s" % (out.get("node"), pin))
        self.expect_running_here(hp, "pin-1")
        self.expect_not_local("pin-1", [h for h in self.hosts if h is not hp])
        nc.log("pin-1 runs on %s %.1f s after create, heartbeat seq %d"
               % (pin, time.monotonic() - t, hb.seq))

        # ---- an action on a VM of another host is forwarded to it ----
        pin_pid = hp.vm_or_none("pin-1")["pid"]
        other = [h for h in self.hosts if h is not hp][0]
        other.cli("vm", "stop", "pin-1", timeout=90)
        v = hp.vm_or_none("pin-1")
        expect_eq("state of pin-1 on %s after `vm stop` on %s" % (pin, other.name), "stopped",
                  v["state"])
        if nc.pid_alive(pin_pid):
            fail("pin-1's QEMU pid %d on %s still runs after the stop" % (pin_pid, pin))
        expect_eq("QEMUs of pin-1 on %s" % pin, [], nc.qemu_pids_for(hp.run_dir("pin-1") + "/"))
        time.sleep(3)  # nobody (the agent, say) may start it again
        v = hp.vm_or_none("pin-1")
        expect_eq("state of pin-1 3 s after the stop", "stopped", v["state"])
        got_fwd = n2.api.expect(200, "GET", "/v1/vms/pin-1").json
        expect_eq("state of pin-1 in GET /v1/vms/pin-1 on n2 (forwarded)", "stopped",
                  got_fwd["state"])

        # ---- the cluster's VM list, from every host ----
        want = {"p-1": h1.name, "aa-1": aa_nodes[0], "aa-2": aa_nodes[1], "c-1": got,
                "pin-1": pin}
        for h in self.hosts:
            vms = h.cluster_vms()
            expect_eq("GET /v1/vms on %s: vm -> node" % h.name, want,
                      {k: v["node"] for k, v in vms.items()})
        expect_eq("vm counts per node in the node list",
                  {n: sum(1 for x in want.values() if x == n) for n in ("n1", "n2", "n3")},
                  {r["name"]: r["vms"] for r in n2.nodes()})

    def wait_defined(self, name, via, timeout=60):
        """Waits until the VM is placed and its node has its own record of
        it; returns the node name."""
        last = {}

        def defined():
            row = last["row"] = via.cluster_vms().get(name)
            if not row or not row.get("node"):
                return None
            return row["node"] if self.host(row["node"]).vm_or_none(name) else None
        try:
            node = nc.poll("vm %s to be defined on its node" % name, defined, timeout,
                           interval=0.25)
        except AssertionError as e:
            fail("%s; the cluster's row: %r" % (e, last.get("row")))
        self.expect_not_local(name, [h for h in self.hosts if h.name != node])
        return node


def r_reason(r):
    return r and r.get("reason")


if __name__ == "__main__":
    nc.main()
