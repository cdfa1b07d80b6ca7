#!/usr/bin/env python3
"""Turns bench/run.sh's raw measurements into the markdown report (stdout).

Usage: summarize.py RAW.jsonl META.txt LOAD.json
Every figure is the median over rounds; every ratio is the median of the per-round ratios
(each round measures the gateway and its peer minutes apart at most).
"""

import json
import sys
from collections import defaultdict
from statistics import median


BUFFERING = {"buf": "buffering on", "stream": "buffering off"}


def best_nginx_ratio(by, s, kind, field, pick):
    """Median over rounds of s's field divided by the better nginx configuration's in that
    round (pick=max for req/s, min for latency), and which configuration that mostly was."""
    rs, names = [], []
    for k in by[s]:
        peers = [(by[f"nginx-{kind}-{c}"][k][field], c) for c in BUFFERING if k in by.get(f"nginx-{kind}-{c}", {})]
        if not peers:
            continue
        v, c = pick(peers)
        if v:
            rs.append(by[s][k][field] / v)
            names.append(c)
    if not rs:
        return float("nan"), "?"
    counts = {c: names.count(c) for c in set(names)}
    label = " / ".join(f"{BUFFERING[c]} in {n} of {len(names)} rounds" for c, n in sorted(counts.items()))
    return median(rs), label


def bulk_section(w, by, med, ratio, errors, meta) -> None:
    """1 MiB uploads and downloads: upstream alone, nginx buffered and streaming, gateway(s)."""
    if not any(f"gw-{k}" in by for k in ("up", "down")):
        return
    w("\n### 1 MiB uploads and downloads\n")
    w(
        f"API key, same `wrk -t1 -c{meta['connections']}` load and CPUs. **Upload**: "
        "`POST /api/datasets/bench-ds/TextClassification:bulk?workspace=team-a` with a "
        f"{int(meta['upload_bytes']):,}-byte JSON body of records; the upstream reads the whole body "
        "before it answers (as Argilla does), with a short JSON count. **Download**: "
        "`POST /api/datasets/bench-ds/TextClassification:search?workspace=team-a&limit=1000` with a "
        f"95-byte query; the upstream answers a {int(meta['download_bytes']):,}-byte JSON page of records "
        "from a file. nginx is measured twice, in one process: **buffering on** (nginx's default "
        "`proxy_buffering on` and `proxy_request_buffering on`, with buffers that hold the whole "
        "1 MiB in memory: `client_body_buffer_size 2m`, `proxy_buffers 32 64k`) and **buffering "
        "off** (`proxy_buffering off; proxy_request_buffering off;`: each chunk passed on as it "
        "arrives). The gateway streams both ways. Ratios: medians of per-round ratios. MiB/s: bytes "
        "wrk received (downloads) or sent (uploads) per second."
    )
    up_seen = meta.get("upstream_uploads", "?")
    whole = meta.get("upstream_uploads_whole", "?")
    w(
        f"The upstream read {whole} of the {up_seen} uploads it was sent in the whole run "
        "(measurements, warm-up and checks) as whole 1 MiB bodies; every download was compared "
        "byte for byte with the file once per proxy before measuring.\n"
    )
    w(
        "| traffic | scenario | req/s | MiB/s | p50 ms | p99 ms | req/s ÷ nginx buffering on | req/s ÷ nginx buffering off "
        "| p99 ÷ nginx on | p99 ÷ nginx off | proxy CPU µs/req | CPU ÷ nginx on | CPU ÷ nginx off | upstream CPU µs/req | errors |"
    )
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, traffic in (("up", "upload"), ("down", "download")):
        rows = [
            (f"upstream-{kind}", "upstream nginx alone (the limit)"),
            (f"nginx-{kind}-buf", "nginx, buffering on"),
            (f"nginx-{kind}-stream", "nginx, buffering off"),
            (f"gw-{kind}", f"gateway {meta['gateway']}"),
            (f"gw-old-{kind}", f"gateway {meta.get('baseline', 'baseline')} (baseline)"),
        ]
        on, off = f"nginx-{kind}-buf", f"nginx-{kind}-stream"
        for s, label in rows:
            if s not in by:
                continue
            mib = median(r["bytes" if kind == "down" else "requests"] / (r["duration_us"] / 1e6) for r in by[s].values())
            mib = mib / 1048576 if kind == "down" else mib * int(meta["upload_bytes"]) / 1048576
            peer = s.startswith("gw")
            dash = "–"
            w(
                f"| {traffic} | {label} | {med(s, 'rps'):,.0f} | {mib:,.0f} | {med(s, 'p50_ms'):.2f} | {med(s, 'p99_ms'):.2f} | "
                + (" | ".join(f"{ratio(s, p, f):.2f}" for f in ("rps",) for p in (on, off)) if s != f"upstream-{kind}" else f"{dash} | {dash}")
                + " | "
                + (" | ".join(f"{ratio(s, p, 'p99_ms'):.2f}" for p in (on, off)) if s != f"upstream-{kind}" else f"{dash} | {dash}")
                + f" | {med(s, 'proxy_cpu_us'):.0f} | "
                + (" | ".join(f"{ratio(s, p, 'proxy_cpu_us'):.2f}" for p in (on, off)) if peer else f"{dash} | {dash}")
                + f" | {med(s, 'upstream_cpu_us') if not s.startswith('upstream') else float('nan'):.0f} | {errors(s)} |"
            )


def baseline_section(w, by, med, ratio, errors, meta) -> None:
    """The gateway against the baseline binary (an earlier commit) on the same traffic."""
    if "gw-old-key" not in by:
        return
    w(f"\n### Gateway {meta['gateway']} against the baseline {meta['baseline']}, same run\n")
    w(
        "The baseline binary runs as a fourth gateway instance (same configuration, users file and "
        "CPU) and takes the same rotating turns; ratios are medians of per-round ratios.\n"
    )
    w("| traffic | req/s | baseline req/s | req/s ÷ baseline | p99 ms | baseline p99 ms | p99 ÷ baseline | CPU µs/req | baseline CPU µs/req | errors (both) |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s, label in (
        ("key", "small GET, API key"),
        ("basic", "small GET, Basic (warm)"),
        ("bearer", "small GET, Bearer"),
        ("up", "1 MiB upload, API key"),
        ("down", "1 MiB download, API key"),
    ):
        new, old = f"gw-{s}", f"gw-old-{s}"
        if new not in by or old not in by:
            continue
        w(
            f"| {label} | {med(new, 'rps'):,.0f} | {med(old, 'rps'):,.0f} | {ratio(new, old, 'rps'):.3f} | "
            f"{med(new, 'p99_ms'):.2f} | {med(old, 'p99_ms'):.2f} | {ratio(new, old, 'p99_ms'):.2f} | "
            f"{med(new, 'proxy_cpu_us'):.1f} | {med(old, 'proxy_cpu_us'):.1f} | {errors(new) + errors(old)} |"
        )


def main() -> None:
    raw_path, meta_path, load_path = sys.argv[1:4]
    rows = [json.loads(line) for line in open(raw_path) if line.strip()]
    meta = dict(line.rstrip("\n").split("=", 1) for line in open(meta_path) if "=" in line)
    load = json.load(open(load_path))["results"][0]

    by = defaultdict(dict)  # scenario -> round -> row
    for r in rows:
        by[r["scenario"]][r["round"]] = r

    def med(s, field):
        return median(r[field] for r in by[s].values())

    def ratio(s, peer, field):
        rs = [by[s][k][field] / by[peer][k][field] for k in by[s] if k in by[peer] and by[peer][k][field]]
        return median(rs) if rs else float("nan")

    def errors(s):
        return sum(r["non2xx"] + r["connect_err"] + r["read_err"] + r["write_err"] + r["timeouts"] for r in by[s].values())

    out = []
    w = out.append
    w("## Results\n")
    w(
        f"{meta['rounds']} interleaved rounds × {meta['duration']} s per scenario, `wrk -t1 -c{meta['connections']}` "
        f"on CPU 1; upstream nginx and the proxy under test share CPU 0. Route: "
        f"`GET /api/datasets/bench-ds?workspace=team-a` (the gateway checks and rewrites the "
        f"workspace); the upstream answers a fixed 250-byte JSON body. {meta['users']} users in "
        "every proxy's user list. Medians over rounds; ratios are medians of per-round ratios to "
        "**nginx + API-key map** measured in the same round. CPU µs/req: user+system CPU time of the "
        "process (nginx: master and worker) divided by the requests served (/proc/PID/stat); "
        "errors: non-2xx answers, socket errors and timeouts seen by wrk.\n"
    )
    w("| scenario | req/s | p50 ms | p99 ms | req/s ÷ nginx-key | p99 ÷ nginx-key | proxy CPU µs/req | upstream CPU µs/req | proxy ctx switches/req | errors |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = [
        ("upstream", "upstream nginx alone (the limit)"),
        ("nginx-key", "nginx: API-key `map` + proxy (peer for keys)"),
        ("relay-tcp", "haproxy `mode tcp`: byte relay, no HTTP parsed (the floor, not a peer)"),
        ("haproxy-key", "haproxy `mode http`: API-key `map` + proxy"),
        ("caddy-basic", "Caddy: `basicauth` (bcrypt, cached) + `reverse_proxy` (peer for Basic)"),
        ("gw-key", "gateway: API key"),
        ("gw-basic", "gateway: Basic, warm (bcrypt cost 10, cached)"),
        ("gw-bearer", "gateway: gateway Bearer token (HS256)"),
    ]
    for s, label in names:
        if s not in by:
            continue
        w(
            f"| {label} | {med(s, 'rps'):,.0f} | {med(s, 'p50_ms'):.2f} | {med(s, 'p99_ms'):.2f} | "
            f"{ratio(s, 'nginx-key', 'rps'):.2f} | {ratio(s, 'nginx-key', 'p99_ms'):.2f} | "
            f"{med(s, 'proxy_cpu_us'):.1f} | {med(s, 'upstream_cpu_us') if s != 'upstream' else float('nan'):.1f} | "
            f"{med(s, 'proxy_csw'):.2f} | {errors(s)} |"
        )
    foreign = [r.get("foreign_pct", 0.0) for r in rows]
    if foreign:
        w(
            f"\nCPU 0 time not spent in the upstream or the proxy under test (other processes, "
            f"interrupts): median {median(foreign):.1f}%, max {max(foreign):.1f}% of CPU 0's busy "
            f"time per measurement ({sum(f > 15 for f in foreign)} of {len(foreign)} measurements above 15%)" + (" — **the machine was not quiet; distrust this run**" if max(foreign) > 15 else "") + "."
        )
    if "caddy-basic" in by and "gw-basic" in by:
        w(
            f"\nGateway Basic vs Caddy `basicauth`: req/s ×{ratio('gw-basic', 'caddy-basic', 'rps'):.2f}, "
            f"p99 ×{ratio('gw-basic', 'caddy-basic', 'p99_ms'):.2f}. "
            f"Gateway API key vs upstream alone: req/s ×{ratio('gw-key', 'upstream', 'rps'):.2f}."
        )

    bulk_section(w, by, med, ratio, errors, meta)
    baseline_section(w, by, med, ratio, errors, meta)

    if any(k in by for k in ("gw-att-key-quiet", "gw-open-key-quiet")):
        w(f"\n### API-key users while {meta['attack_rate']} wrong-password Basic requests/s arrive\n")
        w(
            "Same `wrk` API-key load as above, on a separate gateway instance, measured quiet and then "
            f"while `attack.py` (CPU 1, from 127.0.0.2) sends {meta['attack_rate']} req/s of "
            "`victim:wrong-password` (victim's hash: bcrypt cost 10).\n"
        )
        w("| gateway limits | quiet req/s | quiet p99 ms | attacked req/s | attacked p99 ms | p99 ratio (worst round) | req/s ratio | attacker answers (all rounds) | attacker p50 / p99 ms |")
        w("|---|---:|---:|---:|---:|---:|---:|---|---|")
    attack_ratios = {}
    for inst, label in [
        ("gw-att-key", "defaults (100/address, 10/username): attacker gets 429 before bcrypt"),
        ("gw-open-key", "raised to 10⁹: every wrong password runs bcrypt"),
    ]:
        q, a = f"{inst}-quiet", f"{inst}-attacked"
        if q not in by or a not in by:
            continue
        p99r = ratio(a, q, "p99_ms")
        worst = max(by[a][k]["p99_ms"] / by[q][k]["p99_ms"] for k in by[a] if k in by[q])
        attack_ratios[inst] = p99r
        counts = defaultdict(int)
        for r in by[a].values():
            for k, v in r["attack"].items():
                if isinstance(v, int) and k not in ("opened",):
                    counts[k] += v
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if v)
        ap50 = median(r["attack"]["p50_ms"] or 0 for r in by[a].values())
        ap99 = median(r["attack"]["p99_ms"] or 0 for r in by[a].values())
        w(
            f"| {label} | {med(q, 'rps'):,.0f} | {med(q, 'p99_ms'):.2f} | {med(a, 'rps'):,.0f} | "
            f"{med(a, 'p99_ms'):.2f} | {p99r:.2f} ({worst:.1f}) | {ratio(a, q, 'rps'):.2f} | {answers} | {ap50:.0f} / {ap99:.0f} |"
        )

    rss_mb = int(meta["rss_warm_kb"]) / 1024
    rss_end_mb = int(meta["rss_end_kb"]) / 1024
    hwm_mb = int(meta["hwm_end_kb"]) / 1024
    load_med = load["median"]
    w("\n### Memory and users-file load\n")
    w(
        f"- Resident size (VmRSS) of the gateway with the {meta['users']}-user file: "
        f"{int(meta['rss_start_kb']) / 1024:.1f} MB loaded and idle, {rss_mb:.1f} MB after "
        f"warm-up, {rss_end_mb:.1f} MB after all rounds (peak VmHWM {hwm_mb:.1f} MB; the raised-limits "
        f"instance after its bcrypt backlog: {int(meta['rss_open_end_kb']) / 1024:.1f} MB)."
    )
    w(
        f"- `argilla-gateway check` of a {meta['big_users']}-user file (parse + validate, as `serve` loads "
        f"it; whole process): median {load_med * 1e3:.0f} ms, min {load['min'] * 1e3:.0f} ms, "
        f"max {load['max'] * 1e3:.0f} ms over {len(load['times'])} runs (hyperfine, CPU 0)."
    )

    w("\n### Targets\n")
    w("| target | measured | verdict |")
    w("|---|---|---|")

    def verdict(ok):
        return "met" if ok else "**missed**"

    k_rps, k_p99 = ratio("gw-key", "nginx-key", "rps"), ratio("gw-key", "nginx-key", "p99_ms")
    w(f"| API key ≥ 1.25× nginx req/s | {k_rps:.2f}× | {verdict(k_rps >= 1.25)} |")
    w(f"| API key p99 ≤ nginx p99 | {k_p99:.2f}× | {verdict(k_p99 <= 1.0)} |")
    for s, label in [("gw-basic", "Basic (warm)"), ("gw-bearer", "Bearer")]:
        r = ratio(s, "nginx-key", "rps")
        w(f"| {label} ≥ 1.0× nginx API-key req/s | {r:.2f}× | {verdict(r >= 1.0)} |")
    if "gw-att-key" in attack_ratios:
        r = attack_ratios["gw-att-key"]
        w(f"| {meta['attack_rate']} wrong passwords/s, default limits: API-key p99 rises ≤ 2× | {r:.2f}× | {verdict(r <= 2.0)} |")
    if "gw-open-key" in attack_ratios:
        r = attack_ratios["gw-open-key"]
        w(f"| {meta['attack_rate']} wrong passwords/s, limits raised (bcrypt runs): API-key p99 rises ≤ 2× | {r:.2f}× | {verdict(r <= 2.0)} |")
    peak = max(rss_mb, rss_end_mb)
    w(f"| RSS ≤ 30 MB with {meta['users']} users | {peak:.1f} MB | {verdict(peak <= 30)} |")
    w(f"| {meta['big_users']}-user file loads in ≤ 1 s | {load_med:.2f} s | {verdict(load_med <= 1.0)} |")
    if "relay-tcp" in by:
        w(
            f"\nThe floor: haproxy relaying bytes without parsing HTTP (each client connection paired "
            f"with one upstream connection: the same reads and writes per request as any proxy) "
            f"reaches {ratio('relay-tcp', 'nginx-key', 'rps'):.2f}× nginx-key's req/s, p99 "
            f"{ratio('relay-tcp', 'nginx-key', 'p99_ms'):.2f}×; haproxy as an HTTP proxy with the same "
            f"key map {ratio('haproxy-key', 'nginx-key', 'rps'):.2f}×. The gateway reaches "
            f"{ratio('gw-key', 'relay-tcp', 'rps'):.2f}× the relay's req/s."
        )

    if any(s in by for s in ("gw-up", "gw-down", "gw-old-key")):
        w("\n1 MiB bodies and the change since the baseline:\n")
        w("| target | measured | verdict |")
        w("|---|---|---|")
    for kind, what in (("up", "1 MiB uploads"), ("down", "1 MiB downloads")):
        if f"gw-{kind}" not in by:
            continue
        r, best = best_nginx_ratio(by, f"gw-{kind}", kind, "rps", max)
        p, pbest = best_nginx_ratio(by, f"gw-{kind}", kind, "p99_ms", min)
        w(f"| {what}: req/s ≥ nginx's best configuration ({best}) | {r:.2f}× | {verdict(r >= 1.0)} |")
        w(f"| {what}: p99 ≤ nginx's best configuration ({pbest}) | {p:.2f}× | {verdict(p <= 1.0)} |")
    for s, label in (("key", "API key"), ("basic", "Basic (warm)"), ("bearer", "Bearer")):
        if f"gw-old-{s}" in by and f"gw-{s}" in by:
            r = ratio(f"gw-{s}", f"gw-old-{s}", "rps")
            w(f"| {label}, small requests: req/s ≥ 0.97× the baseline {meta['baseline']} | {r:.2f}× | {verdict(r >= 0.97)} |")

    w("\n### Machine\n")
    w(
        f"{meta['nproc']} CPUs ({meta['cpu']}), kernel {meta['kernel']}, {meta['os']}; "
        f"nginx {meta['nginx']}, Caddy {meta['caddy']}, {meta.get('haproxy', 'haproxy ?')}, {meta['wrk']}, {meta['rustc']}; "
        f"gateway {meta['gateway']}.\n"
    )
    w(f"Command: `{meta['command']}`")
    print("\n".join(out))


if __name__ == "__main__":
    main()
