"""nats-py (PyPI nats-py) as a third-party client of the Pier worker, for the conformance tests.

  nats_py_check.py discover URL NAME   $SRV.PING/INFO/STATS.NAME; every answer parsed with the
                                       nats.micro types' from_dict (ADR-32 as nats-py reads it)
  nats_py_check.py request URL SUBJECT TASK
                                       one task_request (URL may carry user-info: nats://TOKEN@host,
                                       nats://user:password@host, which nats-py uses as credentials)
  nats_py_check.py progress URL SUBJECT TASK [cancel]
                                       one task_request with Pier-Progress-To (protocol v1.1): every
                                       task_progress until the answer; with `cancel`, once accepted,
                                       a task_cancel with a wrong token, then 0.3 s later the right
                                       one (cancel_ms: from it to the answer)

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


async def progress(url, subject, task, cancel=None):
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=5)
    try:
        loop = asyncio.get_running_loop()
        seen = []
        accepted = loop.create_future()
        answer = loop.create_future()

        async def on_progress(msg):
            p = json.loads(msg.data)
            seen.append(p)
            if p.get("state") == "accepted" and not accepted.done():
                accepted.set_result(p)

        async def on_answer(msg):
            if not answer.done():
                answer.set_result(json.loads(msg.data))

        progress_to, reply = nc.new_inbox(), nc.new_inbox()
        await nc.subscribe(progress_to, cb=on_progress)
        await nc.subscribe(reply, cb=on_answer)
        body = json.dumps({"version": "1.0", "id": "py-progress", "type": "task_request", "task": task, "timeoutMs": 60000})
        await nc.publish(subject, body.encode(), reply=reply, headers={"Pier-Progress-To": progress_to})
        cancel_ms = None
        if cancel:
            a = await asyncio.wait_for(accepted, 10)
            wrong = {"version": "1.1", "type": "task_cancel", "id": "py-progress", "token": "x" * 22}
            await nc.publish(a["cancel"]["subject"], json.dumps(wrong).encode())
            await asyncio.sleep(0.3)
            answered_early = answer.done()
            right = {"version": "1.1", "type": "task_cancel", "id": "py-progress", "token": a["cancel"]["token"]}
            sent = loop.time()
            await nc.publish(a["cancel"]["subject"], json.dumps(right).encode())
            result = await asyncio.wait_for(answer, 10)
            cancel_ms = (loop.time() - sent) * 1000
        else:
            answered_early = False
            result = await asyncio.wait_for(answer, 30)
        await nc.flush()
        await asyncio.sleep(0.1)
        return {"progress": seen, "reply": result, "cancel_ms": cancel_ms, "answered_before_right_cancel": answered_early}
    finally:
        await nc.close()


def main(argv):
    command, *args = argv
    if command == "discover":
        result = asyncio.run(discover(*args))
    elif command == "request":
        result = asyncio.run(request(*args))
    elif command == "progress":
        result = asyncio.run(progress(*args))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
