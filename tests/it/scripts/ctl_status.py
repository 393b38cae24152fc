"""Calls `status` on a gridmon agent from Python (nats-py + msgpack), as any script could.

Usage: ctl_status.py NATS_URL SUBJECT msgpack|json — prints the reply body as JSON.
The request is unsigned, which agents accept for read-only operations when
`commands.allow_unsigned_read = true` (docs/commands.md).
"""
import asyncio
import json
import os
import sys
import time

import msgpack
import nats


async def main(url, subject, encoding):
    nc = await nats.connect(url)
    now = int(time.time() * 1000)
    # The subject is <prefix>.cmd.<cluster>.<group>.<node>.
    cluster, group, node = subject.split(".")[-3:]
    body = {
        "op": "status",
        "target": {"cluster": cluster, "group": group, "node": node},
        "issuer": "python-script",
        "issued_ms": now,
        "expires_ms": now + 30_000,
        "nonce": os.urandom(16).hex(),
    }
    request = {"schema": 1, "kind": "command", "body": body}
    if encoding == "json":
        msg = await nc.request(subject, json.dumps(request).encode(), timeout=10,
                               headers={"Gridmon-Encoding": "json"})
        reply = json.loads(msg.data)
    else:
        msg = await nc.request(subject, msgpack.packb(request), timeout=10)
        reply = msgpack.unpackb(msg.data)
    assert reply["kind"] == "command_reply", reply
    print(json.dumps(reply["body"]))
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
