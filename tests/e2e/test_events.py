#!/usr/bin/python3
"""GET /v1/events (server-sent events over the unix socket) while a VM is
created and started: vm.state defined -> starting -> running in order, the
start operation's progress, ids that only grow."""

import json
import time

import nc
from nc import expect_eq, fail

OP_ORDER = {"pending": 0, "running": 1, "succeeded": 2, "failed": 2, "cancelled": 2}


class Events(nc.TestCase):
    def test_events_for_create_and_start(self):
        d = self.start_daemon()
        d.register_image()
        stream = nc.EventStream(d.api)
        self.addCleanup(stream.close)

        r = d.api.expect(201, "POST", "/v1/vms",
                         {"name": "ev", "image": nc.IMAGE, "start": True, "memory": "256M"})
        op_id = r.json["operation"]["id"]

        events = []  # (id, type, data)
        deadline = time.monotonic() + nc.OP_TIMEOUT_S
        done = False
        while not done:
            ev = stream.next(deadline - time.monotonic())
            if ev is None:
                fail("event stream ended or went quiet before the start operation finished; "
                     "got %r" % events)
            if ev[0] == "error":
                fail("event stream broke: %s" % ev[1])
            data = json.loads(ev[2])
            events.append((ev[0], ev[1], data))
            done = ev[1] == "operation" and data["id"] == op_id and \
                data["status"] in ("succeeded", "failed", "cancelled")
        nc.log("%d events: %s" % (len(events), [(e[1], e[2].get("to") or e[2].get("status"))
                                                for e in events]))

        ids = [int(e[0]) for e in events]
        if ids != sorted(set(ids)):
            fail("event ids are not strictly increasing: %r" % ids)

        states = [(e[2]["from"], e[2]["to"]) for e in events
                  if e[1] == "vm.state" and e[2]["vm"] == "ev"]
        expect_eq("vm.state transitions of ev", [("defined", "starting"), ("starting", "running")],
                  states)
        for _, typ, data in events:
            if typ == "vm.state":
                for k in ("vm", "from", "to", "reason", "at"):
                    if k not in data:
                        fail("vm.state event without %r: %r" % (k, data))

        op_events = [e[2] for e in events if e[1] == "operation" and e[2]["id"] == op_id]
        statuses = [o["status"] for o in op_events]
        expect_eq("final status of the start operation", "succeeded", statuses[-1],
                  repr(op_events[-1]))
        if "running" not in statuses:
            fail("no operation event while the start was running: %r" % statuses)
        if [OP_ORDER[s] for s in statuses] != sorted(OP_ORDER[s] for s in statuses):
            fail("operation statuses went backwards: %r" % statuses)
        for o in op_events:
            expect_eq("operation event kind/target", ("vm.start", "ev"), (o["kind"], o["target"]))
        # A client that sees the operation succeed must already have seen
        # the state it produced.
        pos_running = [i for i, e in enumerate(events)
                       if e[1] == "vm.state" and e[2]["to"] == "running"][0]
        pos_done = len(events) - 1
        if pos_running > pos_done:
            fail("operation succeeded (event %d) before the vm was running (event %d)"
                 % (pos_done, pos_running))

        # The stream keeps going for later changes, and closes cleanly.
        d.api.expect(202, "POST", "/v1/vms/ev/pause")
        while True:
            ev = stream.next(20)
            if ev is None or ev[0] == "error":
                fail("no vm.state event for the pause: %r" % (ev,))
            data = json.loads(ev[2])
            if ev[1] == "vm.state" and data["vm"] == "ev":
                expect_eq("pause transition", ("running", "paused"), (data["from"], data["to"]))
                break
        stream.close()
        expect_eq("healthz after the stream closed", 200, d.api.get("/healthz").status)


if __name__ == "__main__":
    nc.main()
