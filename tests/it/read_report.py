"""Reads one gridmon node report with nats-py and msgpack, using only the documented field names.

Usage: read_report.py NATS_URL SUBJECT. Prints READY once subscribed, then one JSON line.
"""
import asyncio
import json
import sys

import msgpack
import nats


async def main(url: str, subject: str) -> None:
    nc = await nats.connect(url)
    sub = await nc.subscribe(subject)
    await nc.flush()
    print("READY", flush=True)
    msg = await sub.next_msg(timeout=30)
    m = msgpack.unpackb(msg.data, raw=False)
    body = m["body"]
    host = body["host"]
    print(json.dumps({
        "schema": m["schema"],
        "kind": m["kind"],
        "cluster": m["source"]["cluster"],
        "node": m["source"]["node"],
        "seq": m["seq"],
        "ts_ms": m["ts_ms"],
        "memory_total_bytes": host["memory"]["total_bytes"],
        "cores": len(host["cpu"]["per_core_pct"]),
        "cpu_total_pct": host["cpu"]["total_pct"],
        "interfaces": [n["name"] for n in host["nets"]],
        "agent_version": body["agent"]["version"],
    }), flush=True)
    await nc.close()


asyncio.run(main(sys.argv[1], sys.argv[2]))
