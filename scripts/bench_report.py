#!/usr/bin/env python3
"""bench_report.py: turns scripts/bench.sh's raw outputs into results.json,
results.md (one markdown table: median, min, max, ratio to the kernel peer)
and results.png (bar chart, matplotlib's Agg backend: no display needed).

Input: rows.tsv (id, section, label, peer id) and runs.tsv (id, run, kind,
comma-separated files) written by bench.sh; the files are iperf3 -J output,
zc-perf --json lines, curl -w / wrk summaries as JSON, and zc-httpd
--stats-json. Only the standard library is needed for the JSON and the
table; the chart needs matplotlib (bench.sh installs python3-matplotlib).
"""

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path


def json_lines(path):
    """Every JSON object in a file (one per line; other lines skipped)."""
    out = []
    for line in Path(path).read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def report_of(objs, **want):
    """The first zc-perf report with the given field values."""
    for o in objs:
        if "role" in o and all(o.get(k) == v for k, v in want.items()):
            return o
    return None


def both_ends(files, what):
    """A zc-perf run's receiver and sender reports (from the two processes'
    outputs) and the one from zcstack, if either end ran it."""
    objs = json_lines(files[0]) + json_lines(files[1])
    rx = report_of(objs, role="receiver")
    tx = report_of(objs, role="sender")
    if rx is None or tx is None:
        raise ValueError(f"missing {what} report")
    zc = next((o for o in (rx, tx) if o.get("stack") == "zcstack"), None)
    return rx, tx, zc


def parse_run(kind, files):
    """One run's figures: a dict of metrics (None when the run failed)."""
    if kind == "iperf3":
        d = json.loads(Path(files[0]).read_text())
        if "error" in d:
            raise ValueError(d["error"])
        end = d["end"]
        rx = end["sum_received"]
        secs = rx["seconds"]
        cpu = end["cpu_utilization_percent"]
        cpu_s = (cpu["host_total"] + cpu["remote_total"]) / 100.0 * secs
        gb = rx["bytes"] / 1e9
        return {
            "gbit_per_s": rx["bits_per_second"] / 1e9,
            "cpu_s_per_gb": cpu_s / gb if gb else None,
            "retransmits": end["sum_sent"].get("retransmits"),
        }
    if kind == "zcperf":
        rx, tx, zc = both_ends(files, "zc-perf")
        if rx.get("pattern_ok") is False:
            raise ValueError("data mismatch")
        gb = rx["bytes"] / 1e9
        return {
            "gbit_per_s": rx["gbit_per_s"],
            "cpu_s_per_gb": (rx["cpu_seconds"] + tx["cpu_seconds"]) / gb if gb else None,
            "zc_cpu_s_per_gb": zc["cpu_seconds_per_gb"] if zc else None,
            "copies_per_byte": zc.get("copies_per_byte") if zc else None,
            "retrans_bytes": tx.get("retrans_bytes"),
        }
    if kind == "udp":
        rx, tx, zc = both_ends(files, "zc-perf UDP")
        sent, got = tx["datagrams"], rx["datagrams"]
        return {
            "rx_pps": got / rx["seconds"] if rx["seconds"] else 0.0,
            "tx_pps": sent / tx["seconds"] if tx["seconds"] else 0.0,
            "loss": 1 - got / sent if sent else None,
            "zc_cpu_s_per_mpkt": (zc["cpu_seconds"] / (zc["datagrams"] / 1e6))
            if zc and zc["datagrams"]
            else None,
            # zcstack sending: socket-buffer copies per byte (0 with the datagram API).
            "copies_per_byte": zc.get("copies_per_byte") if zc else None,
        }
    if kind == "udpmq":
        # One server with --queues: a receiver report per flow (each tagged
        # with its queue), two kernel clients.
        srv = [r for r in json_lines(files[0]) if r.get("role") == "receiver"]
        clients = [r for f in files[1:] for r in json_lines(f) if r.get("role") == "sender"]
        if not srv or not clients:
            raise ValueError("no reports")
        got = sum(r["datagrams"] for r in srv)
        sent = sum(c["datagrams"] for c in clients)
        return {
            "rx_pps": sum(r["datagrams"] / r["seconds"] for r in srv if r["seconds"]),
            "loss": 1 - got / sent if sent else None,
            "queues_used": len({r.get("queue") for r in srv}),
        }
    if kind in ("1g", "64k"):
        d = json_lines(files[0])
        cpu = json_lines(files[1])
        if not d:
            raise ValueError("no client figures")
        d = d[-1]
        cpu_s = cpu[0]["server_cpu_seconds"] if cpu else None
        if kind == "1g":
            if d.get("http_code") != 200:
                raise ValueError(f"HTTP {d.get('http_code')}")
            secs, nbytes, extra = d["seconds"], d["bytes"], {}
        else:
            secs, nbytes = d["duration_us"] / 1e6, d["bytes"]
            extra = {"req_per_s": d["requests"] / secs, "errors": d["errors"]}
        gb = nbytes / 1e9
        return {
            "gbit_per_s": nbytes * 8 / secs / 1e9,
            "server_cpu_s_per_gb": cpu_s / gb if cpu_s is not None and gb else None,
            **extra,
        }
    raise ValueError(f"unknown kind {kind}")


def metric_of(row_id):
    """(metric key, unit, scale) a row is compared by."""
    if row_id.startswith("udp/"):
        key = "tx_pps" if row_id.endswith("-tx") else "rx_pps"
        return key, "Mpkt/s", 1e-6
    if row_id.endswith("-64k"):
        return "req_per_s", "req/s", 1.0
    return "gbit_per_s", "Gbit/s", 1.0


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", required=True)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--machine", default="")
    ap.add_argument("--seconds", type=int, default=0)
    ap.add_argument("--run-count", type=int, default=0)
    ap.add_argument("--elapsed", type=int, default=0)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--previous", help="results.json of an earlier run: rows this run did "
                    "not measure are taken from it (marked as such)")
    a = ap.parse_args()

    rows = {}
    order = []
    for line in Path(a.rows).read_text().splitlines():
        rid, section, label, peer = (line.split("\t") + [""] * 4)[:4]
        rows[rid] = {"id": rid, "section": section, "label": label, "peer": peer or None,
                     "runs": [], "failed": [], "copies_per_byte": None}
        order.append(rid)

    for line in Path(a.runs).read_text().splitlines():
        rid, run, kind, files = line.split("\t")
        files = files.split(",")
        if kind == "httpd-stats":
            st = json_lines(files[0])
            if st and st[0].get("tx_copies_per_byte") is not None:
                rows[rid].setdefault("httpd_copies", []).append(st[0]["tx_copies_per_byte"])
            continue
        try:
            m = parse_run(kind, files)
        except (OSError, ValueError, KeyError, ZeroDivisionError) as e:
            rows[rid]["failed"].append({"run": int(run), "error": str(e)})
            continue
        m["run"] = int(run)
        rows[rid]["runs"].append(m)
        # A kernel UDP run measures both directions: its sending half is a row too.
        if kind == "udp" and rid + "-tx" in rows:
            rows[rid + "-tx"]["runs"].append(m)

    for r in rows.values():
        key, unit, scale = metric_of(r["id"])
        vals = [m[key] * scale for m in r["runs"] if m.get(key) is not None]
        r["metric"], r["unit"] = key, unit
        r["values"] = vals
        r["median"] = med(vals)
        r["min"] = min(vals) if vals else None
        r["max"] = max(vals) if vals else None
        if r["id"].endswith("-64k"):
            r["gbit_per_s_median"] = med([m.get("gbit_per_s") for m in r["runs"]])
        for k in ("cpu_s_per_gb", "zc_cpu_s_per_gb", "server_cpu_s_per_gb", "zc_cpu_s_per_mpkt"):
            v = med([m.get(k) for m in r["runs"]])
            if v is not None:
                r[k] = v
        if r["copies_per_byte"] is None:
            r["copies_per_byte"] = med(r.pop("httpd_copies", None)
                                       or [m.get("copies_per_byte") for m in r["runs"]])
    if a.previous:
        prev = json.loads(Path(a.previous).read_text())
        for pr in prev.get("rows", []):
            cur = rows.get(pr["id"])
            if pr.get("median") is None:
                continue
            if cur is None:
                rows[pr["id"]] = cur = dict(pr)
                order.append(pr["id"])
            elif cur["runs"] or cur["failed"]:
                continue
            else:
                cur.update(pr)
            cur["measured"] = pr.get("measured") or prev.get("date")
    for r in rows.values():
        p = rows.get(r["peer"]) if r["peer"] else None
        r["ratio"] = (r["median"] / p["median"]) if p and p["median"] and r["median"] else None

    def ratio(a_id, b_ids):
        ra = rows.get(a_id)
        bs = [rows[b] for b in b_ids if b in rows and rows[b]["median"]]
        if not ra or not ra["median"] or not bs:
            return None, None
        best = max(bs, key=lambda x: x["median"])
        return ra["median"] / best["median"], best["id"]

    targets = []
    for a_id, b_ids, goal, what in [
        ("tcp/1500-off/xdp-rx", ["tcp/1500-off/kernel-iperf3"], 1.5,
         "AF_XDP, MTU 1500, zcstack receiving vs kernel TCP, offloads off"),
        ("tcp/1500-off/xdp-tx", ["tcp/1500-off/kernel-iperf3"], 1.5,
         "AF_XDP, MTU 1500, zcstack sending vs kernel TCP, offloads off"),
        ("tcp/65535/xdp-rx", ["tcp/1500-on/kernel-iperf3"], 1.0,
         "AF_XDP, MTU 65535, receiving vs kernel TCP, MTU 1500 offloads on"),
        ("tcp/65535/xdp-tx", ["tcp/1500-on/kernel-iperf3"], 1.0,
         "AF_XDP, MTU 65535, sending vs kernel TCP, MTU 1500 offloads on"),
        ("tcp/tap/tap-tso-rx", ["tcp/1500-on/kernel-iperf3"], 1.0,
         "TAP with TSO, receiving vs kernel TCP, MTU 1500 offloads on"),
        ("tcp/tap/tap-tso-tx", ["tcp/1500-on/kernel-iperf3"], 1.0,
         "TAP with TSO, sending vs kernel TCP, MTU 1500 offloads on"),
    ] + [
        t
        for bed, mtu in (("1500-on", 1500), ("65535", 65535))
        for t in (
            (f"http/{bed}/zc-httpd-1g", [f"http/{bed}/nginx-sendfile-on-1g"], 0.7,
             f"zc-httpd vs nginx sendfile on, big file, MTU {mtu}"),
            (f"http/{bed}/zc-httpd-64k",
             [f"http/{bed}/nginx-sendfile-on-64k", f"http/{bed}/nginx-sendfile-off-64k"], 1.0,
             f"zc-httpd vs nginx's best, 64 KiB files, MTU {mtu}"),
        )
    ] + [
        ("http/tap/zc-httpd-tso-1g", ["http/1500-on/nginx-sendfile-on-1g"], 0.7,
         "zc-httpd on TAP with TSO vs nginx sendfile on, big file, MTU 1500"),
        ("http/tap/zc-httpd-tso-64k",
         ["http/1500-on/nginx-sendfile-on-64k", "http/1500-on/nginx-sendfile-off-64k"], 1.0,
         "zc-httpd on TAP with TSO vs nginx's best, 64 KiB files, MTU 1500"),
    ] + [
        # Issue 14: UDP by frame handle vs the kernel's UDP, 64-byte datagrams.
        ("udp/1500-off/xdp-rx", ["udp/1500-off/kernel"], 2.0,
         "UDP 64 B, datagram API on AF_XDP receiving vs kernel (recvmmsg)"),
        ("udp/1500-off/xdp-tx", ["udp/1500-off/kernel-tx"], 2.0,
         "UDP 64 B, datagram API on AF_XDP sending vs kernel (sendmmsg)"),
        ("udp/1500-off/xdp-rx-zc", ["udp/1500-off/kernel-rx-zc"], 2.0,
         "UDP 64 B, datagram API on AF_XDP receiving vs kernel (recvmmsg), both from a zcstack sender"),
    ] + [
        # Issue 15: TSO through AF_PACKET beside AF_XDP receive (--tx-gso).
        ("tcp/1500-on/xdp-gso-tx", ["tcp/1500-on/kernel-iperf3"], 1.0,
         "AF_XDP --tx-gso, MTU 1500, sending vs kernel TCP, offloads on"),
        ("http/1500-on/zc-httpd-gso-1g", ["http/1500-on/nginx-sendfile-on-1g"], 1.0,
         "zc-httpd --tx-gso vs nginx sendfile on, big file, MTU 1500"),
        ("http/1500-on/zc-httpd-gso-64k",
         ["http/1500-on/nginx-sendfile-on-64k", "http/1500-on/nginx-sendfile-off-64k"], 1.0,
         "zc-httpd --tx-gso vs nginx's best, 64 KiB files, MTU 1500"),
    ]:
        got, peer = ratio(a_id, b_ids)
        targets.append({"what": what, "row": a_id, "peer": peer, "goal": goal, "ratio": got,
                        "met": None if got is None else got >= goal})

    now = datetime.datetime.now(datetime.timezone.utc)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": a.machine,
        "quick": a.quick,
        "runs_per_row": a.run_count,
        "seconds_per_run": a.seconds,
        "big_file_mib": a.big_mib,
        "elapsed_seconds": a.elapsed,
        "rows": [rows[i] for i in order],
        "targets": targets,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")

    md = markdown(doc, rows, order)
    (out / "results.md").write_text(md)
    print(md)
    try:
        chart(doc, rows, order, out / "results.png")
    except ImportError:
        print("bench_report: matplotlib is missing: no chart (apt-get install python3-matplotlib)",
              file=sys.stderr)


def fmt(v, digits=2):
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def markdown(doc, rows, order):
    lines = [
        f"Measured {doc['date']} on {doc['machine']}; "
        f"{doc['runs_per_row']} run(s) per row, {doc['seconds_per_run']} s each"
        f"{' (--quick)' if doc['quick'] else ''}; whole run {doc['elapsed_seconds']} s.",
        "",
        "| section | row | median | min | max | unit | × peer | CPU s/GB | copies/B |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for rid in order:
        r = rows[rid]
        if r["median"] is None and not r["failed"]:
            continue
        if r["id"].startswith("udp/"):
            cpu = r.get("zc_cpu_s_per_mpkt")
            cpu_s = f"{fmt(cpu)} s/Mpkt" if cpu is not None else "—"
        elif "zc_cpu_s_per_gb" in r:
            cpu_s = f"{fmt(r['zc_cpu_s_per_gb'])} (both ends {fmt(r.get('cpu_s_per_gb'))})"
        elif "server_cpu_s_per_gb" in r:
            cpu_s = f"{fmt(r['server_cpu_s_per_gb'])} (server)"
        else:
            cpu_s = f"{fmt(r.get('cpu_s_per_gb'))} (both ends)" if r.get("cpu_s_per_gb") else "—"
        label = r["label"]
        if r.get("measured"):
            label += f" (earlier run, {r['measured']})"
        if r["failed"]:
            label += f" ({len(r['failed'])} run(s) failed: {r['failed'][0]['error'][:60]})"
        if r["id"].startswith("udp/"):
            loss = med([m.get("loss") for m in r["runs"]])
            if loss is not None:
                label += f" [lost {loss:.1%}]"
            used = [m["queues_used"] for m in r["runs"] if "queues_used" in m]
            if used:
                label += f" [queues with traffic: {min(used)}–{max(used)}]"
        if r["id"].endswith("-64k") and r.get("gbit_per_s_median"):
            label += f" [{fmt(r['gbit_per_s_median'])} Gbit/s]"
        peer = rows.get(r["peer"]) if r["peer"] else None
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] else ("peer" if not r["peer"] else "—")
        lines.append(
            f"| {r['section']} | {label} | {fmt(r['median'])} | {fmt(r['min'])} | {fmt(r['max'])} "
            f"| {r['unit']} | {ratio} | {cpu_s} | {fmt(r['copies_per_byte'])} |"
        )
        del peer
    lines += ["", "Targets (issues 4, 14 and 15):", "", "| target | ratio | goal | met |", "|---|---:|---:|---|"]
    for t in doc["targets"]:
        got = f"{t['ratio']:.2f}×" if t["ratio"] is not None else "not measured"
        met = {True: "yes", False: "no", None: "—"}[t["met"]]
        lines.append(f"| {t['what']} | {got} | ≥ {t['goal']}× | {met} |")
    return "\n".join(lines) + "\n"


def chart(doc, rows, order, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("TCP throughput (Gbit/s)", [i for i in order if i.startswith("tcp/")], "gbit_per_s", 1.0),
        ("HTTP (Gbit/s of response bytes)", [i for i in order if i.startswith("http/")],
         "gbit_per_s", 1.0),
        ("UDP datagrams, 64 and 1472 bytes (Mpkt/s)", [i for i in order if i.startswith("udp/")], None, 1e-6),
    ]
    panels = [(t, [i for i in ids if rows[i]["runs"]], k, s) for t, ids, k, s in panels]
    panels = [p for p in panels if p[1]]
    if not panels:
        return
    heights = [max(1.5, 0.28 * len(ids) + 0.8) for _, ids, _, _ in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, sum(heights)),
                             gridspec_kw={"height_ratios": heights})
    if len(panels) == 1:
        axes = [axes]
    for ax, (title, ids, key, scale) in zip(axes, panels):
        names, meds, lo, hi, colors = [], [], [], [], []
        for i in ids:
            r = rows[i]
            k = key or metric_of(i)[0]
            vals = [m[k] * scale for m in r["runs"] if m.get(k) is not None]
            if not vals:
                continue
            m = statistics.median(vals)
            names.append(f"{r['section'].split(', ', 1)[-1]}: {r['label']}")
            meds.append(m)
            lo.append(m - min(vals))
            hi.append(max(vals) - m)
            zc = "zcstack" in r["label"] or "zc-httpd" in r["label"] or "smoltcp" in r["label"]
            colors.append("#d9534f" if zc else "#5b7fa6")
        y = list(range(len(names)))[::-1]
        ax.barh(y, meds, xerr=[lo, hi], color=colors, capsize=2)
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
        for yy, m in zip(y, meds):
            ax.text(m, yy, f" {m:.2f}", va="center", fontsize=6)
        top = max(m + h for m, h in zip(meds, hi)) if meds else 1.0
        ax.set_xlim(0, top * 1.12)
    fig.suptitle(f"zcstack (red) vs kernel / nginx (blue) — {doc['date']}, {doc['machine']}"
                 f"\nmedian of {doc['runs_per_row']} run(s), bars: min–max", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
