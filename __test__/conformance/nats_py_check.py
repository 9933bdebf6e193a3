"""nats-py (PyPI nats-py) as a third-party client of the Pier worker, for the conformance tests.

  nats_py_check.py discover URL NAME   $SRV.PING/INFO/STATS.NAME; every answer parsed with the
                                       nats.micro types' from_dict (ADR-32 as nats-py reads it)
  nats_py_check.py request URL SUBJECT TASK
                                       one task_request (URL may carry user-info: nats://TOKEN@host,
                                       nats://user:password@host, which nats-py uses as credentials)

Prints one JSON object on stdout; any exception (a KeyError or ValueError from from_dict, an
authorization error) exits non-zero with its traceback on stderr.
"""

import asyncio
import importlib.metadata
import json
import sys

import nats
from nats.micro.service import ServiceInfo, ServicePing, ServiceStats

WAIT_S = 0.5


async def gather(nc, subject):
    """Every answer to one request on `subject` that arrives within WAIT_S."""
    inbox = nc.new_inbox()
    answers = []

    async def collect(msg):
        answers.append(json.loads(msg.data))

    sub = await nc.subscribe(inbox, cb=collect)
    await nc.publish(subject, b"", reply=inbox)
    await asyncio.sleep(WAIT_S)
    await sub.unsubscribe()
    return answers


async def discover(url, name):
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        pings = [ServicePing.from_dict(a) for a in await gather(nc, f"$SRV.PING.{name}")]
        infos = [ServiceInfo.from_dict(a) for a in await gather(nc, f"$SRV.INFO.{name}")]
        stats = [ServiceStats.from_dict(a) for a in await gather(nc, f"$SRV.STATS.{name}")]
    finally:
        await nc.close()
    return {
        "nats_py": importlib.metadata.version("nats-py"),
        "ping": [{"id": p.id, "name": p.name, "version": p.version, "metadata": p.metadata} for p in pings],
        "info": [
            {
                "id": i.id,
                "metadata": i.metadata,
                "description": i.description,
                "endpoints": [
                    {"name": e.name, "subject": e.subject, "queue_group": e.queue_group, "metadata": e.metadata}
                    for e in i.endpoints
                ],
            }
            for i in infos
        ],
        "stats": [
            {
                "id": s.id,
                "metadata": s.metadata,
                "started": s.started.isoformat(),
                "endpoints": [
                    {
                        "name": e.name,
                        "subject": e.subject,
                        "queue_group": e.queue_group,
                        "num_requests": e.num_requests,
                        "num_errors": e.num_errors,
                        "last_error": e.last_error,
                        "processing_time": e.processing_time,
                        "average_processing_time": e.average_processing_time,
                        "has_data": e.data is not None,
                    }
                    for e in s.endpoints
                ],
            }
            for s in stats
        ],
    }


async def request(url, subject, task):
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
    try:
        body = json.dumps({"version": "1.0", "id": "from-nats-py", "type": "task_request", "task": task})
        msg = await nc.request(subject, body.encode(), timeout=5)
        return {"reply": json.loads(msg.data)}
    finally:
        await nc.close()


def main(argv):
    command, *args = argv
    if command == "discover":
        result = asyncio.run(discover(*args))
    elif command == "request":
        result = asyncio.run(request(*args))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
