#!/usr/bin/env python3
"""lossbench_report.py: turns scripts/lossbench.sh's raw outputs into one
markdown table (loss.md) and JSON (loss.json).

Input (written by lossbench.sh):
  rows.tsv   id, workload, path label, expected bytes, expected sha256, timeout s
  runs.tsv   id, run, stack, kind, key=file,key=file,...
    kind http:  curl (curl -w JSON), rc (curl exit code), err (curl stderr),
                sha (sha256 of what arrived), srv (zc-httpd --stats-json),
                snstat0/1, cnstat0/1 (server and client namespaces' `nstat -asz`
                before/after), sender (server or client: whose kernel TCP sends),
                relay (zc-impair --stats-json)
    kind bulk:  cli (zc-perf client --json), srv (zc-perf server output),
                snstat/cnstat, sender, relay
    kind iperf3: cli (iperf3 -J) for the relay's unimpaired forwarding rate
Counters: every key starting with `tcp_` in the zcstack app's final JSON
(at any depth), and for Linux the sending namespace's TCP counters (nstat)
that concern loss recovery, as deltas.
"""

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

LINUX_COUNTERS = re.compile(
    r"Retrans|Timeout|LossProbe|Recover|Undo|Reorder|DSACK|SackRecovery|SACKReneg|FastRetrans|SpuriousRTO|RTORecovery"
)


def read(path):
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def json_objects(text):
    """Every JSON object in TEXT, one per line (other lines ignored)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    if not out and text.strip().startswith("{"):
        try:
            out.append(json.loads(text))
        except json.JSONDecodeError:
            pass
    return out


def tcp_keys(obj, prefix=""):
    """Every key starting with tcp_ at any depth, as {path: value}."""
    found = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            path = f"{prefix}{k}"
            if k.startswith("tcp_") and not isinstance(v, (dict, list)):
                found[path] = v
            elif isinstance(v, (dict, list)):
                found.update(tcp_keys(v, path + "."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found.update(tcp_keys(v, f"{prefix}{i}."))
    return found


def nstat(text):
    vals = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            vals[parts[0]] = int(parts[1])
    return vals


def linux_counters(files, ns):
    """Loss-recovery counter deltas of namespace NS (s: server, c: client)."""
    before = nstat(read(files.get(f"{ns}nstat0", "")))
    after = nstat(read(files.get(f"{ns}nstat1", "")))
    out = {}
    for k, v in after.items():
        d = v - before.get(k, 0)
        if d and LINUX_COUNTERS.search(k):
            out[k] = d
    return out


def relay_summary(files):
    text = read(files.get("relay", ""))
    if not text.strip():
        return None
    try:
        r = json.loads(text)
    except json.JSONDecodeError:
        return None
    out = {}
    for d in ("a2b", "b2a"):
        s = r.get(d, {})
        out[d] = {k: s.get(k) for k in (
            "offered", "forwarded", "dropped_random", "dropped_burst", "dropped_queue",
            "dropped_limit", "duplicated", "corrupted", "reordered", "max_queue_bytes",
            "dropped_no_frame")}
    for side in ("a_driver", "b_driver"):
        s = r.get(side, {})
        out[side + "_kernel_drops"] = sum(s.get(k, 0) for k in (
            "kernel_rx_ring_full", "kernel_rx_dropped", "kernel_fill_ring_empty"))
    return out


def measure_http(files, want_bytes, want_sha):
    curl = (json_objects(read(files.get("curl", ""))) or [{}])[-1]
    rc = int(read(files.get("rc", "")).strip() or -1)
    got = int(curl.get("bytes", 0) or 0)
    secs = float(curl.get("seconds", 0) or 0)
    sha = read(files.get("sha", "")).split()[0] if read(files.get("sha", "")).strip() else ""
    if rc == 0 and got == want_bytes:
        status = "ok"
    elif rc == 28:
        status = "timeout"
    else:
        err = read(files.get("err", "")).strip().splitlines()
        status = f"failed (curl {rc}: {err[-1] if err else 'no message'})"
    check = "sha ok" if got == want_bytes and sha == want_sha else (
        "SHA MISMATCH" if got == want_bytes else "incomplete")
    counters = {}
    for o in json_objects(read(files.get("srv", ""))):
        counters.update(tcp_keys(o))
    return {"bytes": got, "seconds": secs, "status": status, "check": check,
            "http_code": curl.get("http_code"), "tcp": counters}


def measure_bulk(files, want_bytes, timeout):
    reports = [o for o in json_objects(read(files.get("cli", ""))) if o.get("side") == "client"]
    r = reports[-1] if reports else {}
    got, secs = int(r.get("bytes", 0) or 0), float(r.get("seconds", 0) or 0)
    ended = r.get("ended_by", "")
    if not r:
        status = "failed (no client report)"
    elif got >= want_bytes and r.get("pattern_ok") is not False:
        status = "ok"
    elif ended == "time" or secs >= 0.95 * timeout:
        # The client's --seconds cap: a sending server stops at it too.
        status = "timeout"
    else:
        status = f"failed (ended by {ended or 'nothing'})"
    ok = r.get("pattern_ok")
    check = "pattern ok" if ok and got >= want_bytes else (
        "PATTERN MISMATCH" if ok is False else "incomplete")
    counters = {}
    for o in json_objects(read(files.get("srv", ""))):
        counters.update(tcp_keys(o))
    return {"bytes": got, "seconds": secs, "status": status, "check": check, "tcp": counters}


def fmt_time(m, timeout):
    if m is None:
        return "not run"
    mib = m["bytes"] / 2**20
    rate = m["bytes"] * 8 / m["seconds"] / 1e6 if m["seconds"] > 0 else 0
    if m["status"] == "ok":
        return f"{m['seconds']:.2f} s, {rate:.0f} Mbit/s"
    if m["status"] == "timeout":
        return f"**timeout** at {timeout} s ({mib:.1f} MiB, {rate:.1f} Mbit/s)"
    return f"**{m['status']}** ({mib:.1f} MiB in {m['seconds']:.1f} s)"


def ratio(k, z, timeout):
    if not k or not z or k["status"] != "ok" or k["seconds"] <= 0:
        return "–"
    if z["status"] == "ok":
        return f"{z['seconds'] / k['seconds']:.1f}×"
    if z["status"] == "timeout":
        return f"> {timeout / k['seconds']:.0f}×"
    return "failed"


def median_of(ms, key):
    vals = [m[key] for m in ms if m is not None]
    return statistics.median(vals) if vals else None


def pick(ms):
    """The median run by completion time (failed runs count as slowest)."""
    ms = [m for m in ms if m is not None]
    if not ms:
        return None
    ms.sort(key=lambda m: (m["status"] != "ok", m["seconds"]))
    return ms[len(ms) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", required=True)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--machine", default="")
    ap.add_argument("--date", default="")
    ap.add_argument("--elapsed", type=int, default=0)
    ap.add_argument("--command", default="")
    ap.add_argument("--kernel-cc", default="")
    ap.add_argument("--zc-cc", default="cubic")
    ap.add_argument("--system-cc", default="")
    a = ap.parse_args()

    rows = []
    for line in Path(a.rows).read_text().splitlines():
        f = line.split("\t")
        if len(f) >= 6:
            rows.append({"id": f[0], "workload": f[1], "path": f[2], "bytes": int(f[3]),
                         "sha": f[4], "timeout": int(f[5])})
    byrow = {}
    calib = {"direct": [], "relay": []}
    for line in Path(a.runs).read_text().splitlines():
        f = line.split("\t")
        if len(f) < 5:
            continue
        rid, run, stack, kind, spec = f[0], int(f[1]), f[2], f[3], f[4]
        files = dict(kv.split("=", 1) for kv in spec.split(",") if "=" in kv)
        if kind == "iperf3":
            try:
                j = json.loads(read(files["cli"]))
                calib[stack].append(j["end"]["sum_received"]["bits_per_second"] / 1e9)
            except (KeyError, json.JSONDecodeError, TypeError):
                pass
            continue
        row = next((r for r in rows if r["id"] == rid), None)
        if row is None:
            continue
        m = (measure_http(files, row["bytes"], row["sha"]) if kind == "http"
             else measure_bulk(files, row["bytes"], row["timeout"]))
        m["run"] = run
        # The kernel TCP that sends: the server's, or the client's (bulk-rx).
        m["sender"] = files.get("sender", "server")
        m["linux_server"] = linux_counters(files, "s")
        m["linux_client"] = linux_counters(files, "c")
        m["relay"] = relay_summary(files)
        byrow.setdefault(rid, {}).setdefault(stack, []).append(m)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    md = ["# Loss recovery: Linux TCP vs zcstack through zc-impair", ""]
    if a.machine:
        md.append(f"Machine: {a.machine}. Date: {a.date}. Elapsed: {a.elapsed} s.")
    if a.command:
        md.append(f"Command: `{a.command}`.")
    if a.kernel_cc:
        default = (f" (this machine's default: {a.system_cc})"
                   if a.system_cc and a.system_cc != a.kernel_cc else "")
        zc = {"cubic": "Cubic", "bbr": "BBR"}.get(a.zc_cc, a.zc_cc)
        md.append(f"Linux congestion control: {a.kernel_cc}{default}; zcstack: {zc}.")
    md += ["",
           "Each row: one impaired path (zc-impair in a middle namespace, the same seeded "
           "impairment both ways and for both stacks), Linux first (nginx `sendfile on` for "
           "HTTP, `zc-perf --kernel` for bulk), then zcstack (zc-httpd / zc-perf on AF_XDP), "
           "kernel clients (curl, zc-perf --kernel). Time: completion, goodput: payload bytes "
           "over that time; zc/Linux: the ratio of completion times (lower is better). "
           "A transfer that hits the row's timeout is reported as such with what arrived.",
           ""]
    if calib["direct"] or calib["relay"]:
        d, r = median_of([{"v": v} for v in calib["direct"]], "v"), median_of(
            [{"v": v} for v in calib["relay"]], "v")
        md += ["## The relay, unimpaired", "",
               "| path | kernel TCP (iperf3, offloads off) | runs |", "|---|---|---|"]
        if d is not None:
            md.append(f"| direct veth | {d:.2f} Gbit/s | {len(calib['direct'])} |")
        if r is not None:
            md.append(f"| through zc-impair (no impairment) | {r:.2f} Gbit/s | {len(calib['relay'])} |")
        if d and r:
            md += ["", f"Relay / direct: {r / d:.2f}."]
        md.append("")
    md += ["## Transfers", "",
           f"| workload | path | Linux{' (' + a.kernel_cc + ')' if a.kernel_cc else ''} | zcstack | zc/Linux | checks (Linux / zcstack) |",
           "|---|---|---|---|---|---|"]
    result_rows = []
    for row in rows:
        got = byrow.get(row["id"], {})
        k, z = pick(got.get("kernel", [])), pick(got.get("zcstack", []))
        if k is None and z is None:
            continue
        checks = f"{k['check'] if k else '–'} / {z['check'] if z else '–'}"
        md.append(f"| {row['workload']} | {row['path']} | {fmt_time(k, row['timeout'])} | "
                  f"{fmt_time(z, row['timeout'])} | {ratio(k, z, row['timeout'])} | {checks} |")
        result_rows.append({**row, "ratio": ratio(k, z, row["timeout"]),
                            "kernel": got.get("kernel", []), "zcstack": got.get("zcstack", [])})
    md += ["", "## Counters", "",
           "zcstack: every `tcp_*` key of the app's final JSON. Linux: the sending "
           "namespace's loss-recovery counters (`nstat`, deltas). Relay: frames dropped / offered, "
           "reordered, per direction (a2b = client to server).", ""]
    for r in result_rows:
        k, z = pick(r["kernel"]), pick(r["zcstack"])
        md.append(f"- **{r['workload']}, {r['path']}**")
        if z is not None:
            tcp = ", ".join(f"{key} {v}" for key, v in sorted(z["tcp"].items())) or "none"
            md.append(f"  - zcstack: {tcp}")
        if k is not None:
            lin = k["linux_client" if k["sender"] == "client" else "linux_server"]
            lin = ", ".join(f"{key} {v}" for key, v in sorted(lin.items())) or "none"
            md.append(f"  - Linux (the sender, {k['sender']}): {lin}")
        if z is not None and z["sender"] == "client":
            lin = ", ".join(f"{key} {v}" for key, v in sorted(z["linux_client"].items())) or "none"
            md.append(f"  - Linux client sending to zcstack: {lin}")
        for name, m in (("Linux", k), ("zcstack", z)):
            rel = m and m.get("relay")
            if rel:
                parts = []
                for d in ("a2b", "b2a"):
                    s = rel[d]
                    dropped = sum((s.get(x) or 0) for x in (
                        "dropped_random", "dropped_burst", "dropped_queue", "dropped_limit"))
                    parts.append(f"{d} dropped {dropped}/{s.get('offered')} "
                                 f"(queue {s.get('dropped_queue')}), reordered {s.get('reordered')}")
                kd = rel.get("a_driver_kernel_drops", 0) + rel.get("b_driver_kernel_drops", 0)
                md.append(f"  - relay ({name} run): {'; '.join(parts)}; relay's own kernel drops {kd}")
    (out / "loss.md").write_text("\n".join(md) + "\n")
    (out / "loss.json").write_text(json.dumps({
        "machine": a.machine, "date": a.date, "elapsed_seconds": a.elapsed,
        "kernel_cc": a.kernel_cc, "system_cc": a.system_cc, "zc_cc": a.zc_cc,
        "command": a.command,
        "relay_calibration_gbit_per_s": calib, "rows": result_rows}, indent=1) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
