#!/usr/bin/python3
"""GET /metrics with a running VM: promtool's linter accepts it, the values
agree with what /proc says about the guest's QEMU, and a real Prometheus
scrapes it and answers queries over the per-VM and daemon metrics."""

import json
import os
import re
import signal
import subprocess
import time
import urllib.parse
import urllib.request

import nc
from nc import expect_eq, fail

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)( -?\d+)?$')


def samples(text):
    """{(name, labels-text): value} of an exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        if not m:
            fail("unparseable metrics line %r" % line)
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def proc_cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime+stime


def proc_rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    fail("no VmRSS for pid %d" % pid)


class Prometheus(nc.TestCase):
    def test_metrics_lint_and_scrape(self):
        for tool in (PROMETHEUS, PROMTOOL):
            if not os.access(tool, os.X_OK):
                fail("%s is missing: run scripts/install-deps (Debian package prometheus)" % tool)
        d = self.start_daemon()
        d.register_image()
        vm, _ = d.boot("prom")
        pid = vm["pid"]
        time.sleep(1.5)  # let the reconciler refresh the guest's statistics

        # /metrics needs no token, also on TCP (docs/api.md).
        r = d.tcp().get("/metrics")
        expect_eq("GET /metrics over TCP without a token", 200, r.status, repr(r))
        ctype = r.headers.get("Content-Type", "")
        if not ctype.startswith("text/plain"):
            fail("/metrics Content-Type is %r, expected text/plain; version=0.0.4" % ctype)
        # Every lint problem counts, warnings included: none is expected,
        # so none is excused here.
        lint = subprocess.run([PROMTOOL, "check", "metrics"], input=r.body,
                              capture_output=True, timeout=60)
        if lint.returncode != 0 or lint.stdout.strip() or lint.stderr.strip():
            fail("promtool check metrics: exit %d\nstdout: %s\nstderr: %s"
                 % (lint.returncode, lint.stdout.decode(), lint.stderr.decode()))

        # The per-VM values describe the real QEMU process.
        s = samples(r.text)
        dom = '{domain="prom"}'
        cpu = s.get(("libvirt_domain_info_cpu_time_seconds_total", dom))
        proc_cpu = proc_cpu_seconds(pid)
        if cpu is None or not 0 < cpu <= proc_cpu + 0.05:
            fail("cpu_time_seconds_total %r: expected > 0 and <= the %.2f s /proc reports now"
                 % (cpu, proc_cpu))
        expect_eq("maximum_memory_bytes", 256 << 20,
                  s.get(("libvirt_domain_info_maximum_memory_bytes", dom)))
        expect_eq("virtual_cpus", 1, s.get(("libvirt_domain_info_virtual_cpus", dom)))
        rss = s.get(("libvirt_domain_info_memory_usage_bytes", dom))
        proc_rss = proc_rss_bytes(pid)
        if rss is None or not 0.5 * proc_rss <= rss <= 1.5 * proc_rss:
            fail("memory_usage_bytes %r is not near the QEMU's VmRSS %d" % (rss, proc_rss))
        expect_eq("novacron_vms running", 1, s.get(("novacron_vms", '{state="running"}')))

        # A real Prometheus scrapes it.
        prom_port = nc.free_tcp_port()
        cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: novacron\n    scrape_interval: 1s\n"
                    "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % d.port)
        prom_log = open(os.path.join(self.tmp, "prometheus.log"), "wb")
        prom = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + cfg,
             "--storage.tsdb.path=" + os.path.join(self.tmp, "prom-data"),
             "--web.listen-address=127.0.0.1:%d" % prom_port],
            stdin=subprocess.DEVNULL, stdout=prom_log, stderr=prom_log,
            preexec_fn=nc._die_with_parent)
        prom_log.close()
        self.helpers.append(prom)
        base = "http://127.0.0.1:%d" % prom_port

        def query(q):
            if prom.poll() is not None:
                fail("prometheus exited with %d:\n%s" % (
                    prom.returncode, nc.tail(os.path.join(self.tmp, "prometheus.log"))))
            url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    body = json.load(resp)
            except OSError:
                return None  # not listening yet
            if body.get("status") != "success":
                fail("query %r: %r" % (q, body))
            return body["data"]["result"]

        q_cpu = 'libvirt_domain_info_cpu_time_seconds_total{domain="prom"}'
        try:
            res = nc.poll("Prometheus to have a sample > 0 of " + q_cpu,
                          lambda: [x for x in (query(q_cpu) or []) if float(x["value"][1]) > 0],
                          60, interval=0.5)
        except AssertionError as e:
            targets = None
            try:
                with urllib.request.urlopen(base + "/api/v1/targets", timeout=5) as resp:
                    targets = json.load(resp)["data"]["activeTargets"]
            except OSError:
                pass
            fail("%s\ntargets: %r\nprometheus log:\n%s" % (
                e, targets, nc.tail(os.path.join(self.tmp, "prometheus.log"), 20)))
        nc.log("Prometheus: %s = %s" % (q_cpu, res[0]["value"][1]))
        expect_eq("instance of the scraped series", "127.0.0.1:%d" % d.port,
                  res[0]["metric"].get("instance"))
        up = query('up{job="novacron"}')
        expect_eq("up{job=novacron}", ["1"], [x["value"][1] for x in up])
        reqs = query("novacron_api_requests_total")
        if not reqs:
            fail("Prometheus has no novacron_api_requests_total series")
        routes = {x["metric"].get("route") for x in reqs}
        if "/metrics" not in routes:
            fail("novacron_api_requests_total has no route=/metrics series (Prometheus's own "
                 "scrapes); routes: %r" % sorted(routes))

        prom.send_signal(signal.SIGTERM)
        try:
            prom.wait(20)
        except subprocess.TimeoutExpired:
            fail("prometheus did not stop on SIGTERM within 20 s")


if __name__ == "__main__":
    nc.main()
