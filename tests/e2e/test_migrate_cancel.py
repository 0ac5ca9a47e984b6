#!/usr/bin/python3
"""Cancelling a live migration mid-precopy.

The guest dirties 100 MiB/s of a 128 MiB working set and A's side of the
link is capped at 50 Mbit/s (tbf), so precopy cannot converge soon. The
migration is started with `novacron vm migrate` on a terminal (a pty), which
draws its progress; once the operation reports passes, `novacron op cancel`
cancels it: the operation ends "cancelled" within a bound, the waiting CLI
exits 1 saying so, with its progress erased and no row wider than the
terminal; the VM runs on A as before (same QEMU,
heartbeats continue, memory intact); B has no VM, no QEMU and no files.
The watch fails the test if two copies ever ran at once.

Then, with the link uncapped, the same VM migrates to B: a cancel leaves
nothing behind that would stand in the way of the next attempt."""

import os
import re
import subprocess
import time

import nc
import nc_migrate as M
from nc import expect_eq, fail

NAME = "mig-cancel"
WORKLOAD = "nc.dirty_mib=128 nc.rate_mib=100 nc.pattern=random"
CANCEL_BOUND_S = 30  # cancel requested -> operation cancelled


class MigrateCancel(M.MigrationCase):
    link_tag = "c"

    def test_cancel_mid_precopy(self):
        a, b = self.start_nodes()
        vm, _ = a.boot(NAME, cmdline_append=WORKLOAD)
        M.wait_new_heartbeats(a, NAME, 10)
        watch = self.watch(NAME, [a, b])

        # A person starts it with the CLI, on a terminal, and watches it.
        self.link.limit(0)
        cli = M.TtyCommand([nc.CLI, "--data-dir", a.data, "vm", "migrate", NAME,
                            "--to", b.endpoint], cols=100)
        self.helpers.append(cli.proc)
        m = nc.poll("the CLI to name the migration's operation",
                    lambda: re.search(r"as (op-[0-9a-f]+);", cli.text()), 20)
        op = a.op(m.group(1))
        expect_eq("kind of the CLI's operation", "vm.migrate", op["kind"])
        expect_eq("migration operation is cancellable", True, op.get("cancellable"),
                  "operation: %r" % op)
        b_pids = M.await_precopy(a, b, NAME, op["id"])
        nc.poll("the CLI to draw the precopy's progress on the terminal",
                lambda: "pass " in cli.text(), 15)
        time.sleep(1.0)  # well inside precopy

        # ... and stops it with the CLI.
        t = time.monotonic()
        p = subprocess.run([nc.CLI, "--data-dir", a.data, "op", "cancel", op["id"]],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        nc.log("novacron op cancel: exit %d: %s%s" % (p.returncode, p.stdout.decode(),
                                                     p.stderr.decode()))
        expect_eq("exit status of novacron op cancel", 0, p.returncode)
        done = a.wait_op(op, CANCEL_BOUND_S + 10)
        took = time.monotonic() - t
        nc.log("operation %s after %.2f s: %r (error %r)" % (done["status"], took,
                                                            done.get("message"),
                                                            done.get("error")))
        expect_eq("status of the cancelled migration", "cancelled", done["status"],
                  "operation: %r" % done)
        if took > CANCEL_BOUND_S:
            fail("the cancel took %.1f s to end the migration (bound %d s)"
                 % (took, CANCEL_BOUND_S))

        # The CLI that waited says so, and left the terminal tidy.
        rc, out = cli.wait(30)
        tty = cli.text()
        nc.log("novacron vm migrate: exit %d, stdout %r; the terminal showed %d bytes, ending "
               "%r" % (rc, out, len(tty), tty[-200:]))
        expect_eq("exit status of the cancelled novacron vm migrate", 1, rc)
        expect_eq("stdout of the cancelled novacron vm migrate", "", out)
        want = "novacron: operation %s (vm.migrate %s) was cancelled" % (op["id"], NAME)
        if not re.search(r"\x1b\[J" + re.escape(want), tty):
            fail("the terminal does not end with the progress erased and %r: %r"
                 % (want, tty[-400:]))
        wide = [r for r in cli.rows() if len(r) > cli.cols - 1 and not r.startswith(
            "migrating vm")]
        if wide:
            fail("progress rows wider than the %d-column terminal: %r" % (cli.cols, wide))
        if not any("vm.migrate %s -> %s:" % (NAME, b.endpoint) in r for r in cli.rows()):
            fail("the terminal never showed the progress block: %r" % cli.rows()[:10])

        # A keeps it: the same QEMU, running, the guest goes on intact.
        v, hbs = M.expect_runs_here(a, NAME, pid=vm["pid"])
        nc.log("A: %s (%r), heartbeats go on from seq %d"
               % (v["state"], v["state_reason"], hbs[0].seq))
        if os.path.exists(os.path.join(a.run_dir(NAME), "mig-out.sock")):
            fail("node a: the migration socket mig-out.sock is left in the run dir")

        # B dropped what it had prepared.
        M.expect_gone(b, NAME, timeout=30)
        M.expect_no_qemu(b)
        for pid in b_pids:
            if nc.pid_alive(pid):
                fail("node b: the incoming QEMU pid %d survived the cancel" % pid)
        expect_eq("vms on b", [], b.vm_names())

        # Nothing stands in the way of the next attempt.
        M.run("ip", "netns", "exec", self.link.ns[0], "tc", "qdisc", "del", "dev",
              self.link.dev[0], "root")
        M.wait_new_heartbeats(a, NAME, 5)
        t = time.monotonic()
        op2 = a.migrate(NAME, b)
        done2 = a.wait_op(op2, M.MIGRATE_TIMEOUT_S)
        nc.log("second attempt: %s in %.1f s: %r (error %r)"
               % (done2["status"], time.monotonic() - t, done2.get("message"),
                  done2.get("error")))
        expect_eq("status of the migration after the cancel", "succeeded", done2["status"],
                  "operation: %r" % done2)
        M.expect_runs_here(b, NAME)
        M.expect_gone(a, NAME)
        sw = watch.switch(a, b, after=t)
        if not 1 <= sw.first_dst.seq - sw.last_src.seq <= 2:
            fail("after the hand-over the guest on b starts at seq %d, the last on a was %d"
                 % (sw.first_dst.seq, sw.last_src.seq))
        watch.check()
        print("MIGRATION after cancel: largest heartbeat gap around the switch %d ms in t_ms, "
              "%.0f ms on the host; %s" % (sw.max_gap_ms, sw.max_host_gap_ms,
                                           done2.get("message")), flush=True)


if __name__ == "__main__":
    nc.main()
