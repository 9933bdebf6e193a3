"""Pier's signed requests and results (protocol.md, "Signed requests and results") written with
Python's own NATS ecosystem: nkeys (PyPI) signs, PyNaCl verifies, nats-py carries the messages.
Nothing here shares code with pier-connector.

  pier_sign.py request URL SUBJECT SEED PAYLOAD [--tamper] [--reply-to SUBJ] [--js] [--ts TS] [--nonce N] [--times K]
      Signs PAYLOAD (a string, sent as its UTF-8 bytes) for SUBJECT and the reply subject, sends it
      K times (the same header each time: a replay after the first), and prints one JSON line
      per reply: {"reply": <task_result|task_error>, "worker": <Pier-Worker check>}. --tamper
      sends other bytes than were signed; --js publishes into JetStream with Pier-Reply-To set to
      --reply-to (or a fresh inbox) and waits there.
  pier_sign.py respond URL SUBJECT SEED [--forge]
      A worker of its own: answers one task_request on SUBJECT with a task_result carrying
      Pier-Worker signed with SEED (--forge: a signature over other bytes), then exits.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import secrets
import sys
from datetime import datetime, timezone

import nacl.signing
import nats
import nkeys


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def now_ts():
    return datetime.now(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def public_key_bytes(key):
    """The 32 ed25519 bytes of a NATS public key (U...): base32, prefix byte, key, crc16."""
    raw = base64.b32decode(key + "=" * (-len(key) % 8))
    return raw[1:33]


def sender_header(kp, subject, reply, payload, ts, nonce):
    key = kp.public_key.decode()
    lines = ["PIER-TASK-V1", key, subject, reply, ts, nonce, hashlib.sha256(payload).hexdigest()]
    signed = "".join(line + "\n" for line in lines).encode()
    sig = b64url(kp.sign(signed))
    return json.dumps({"v": 1, "key": key, "ts": ts, "nonce": nonce, "sig": sig}, separators=(",", ":"))


def check_worker(headers, reply_payload, request_id, nonce):
    """Verifies a reply's Pier-Worker header with PyNaCl: {"key"} when good, {"error"} when not."""
    value = (headers or {}).get("Pier-Worker")
    if value is None:
        return None
    try:
        h = json.loads(value)
        lines = ["PIER-RESULT-V1", h["key"], request_id or "", nonce or "", h["ts"], hashlib.sha256(reply_payload).hexdigest()]
        signed = "".join(line + "\n" for line in lines).encode()
        nacl.signing.VerifyKey(public_key_bytes(h["key"])).verify(signed, unb64url(h["sig"]))
        return {"key": h["key"]}
    except Exception as error:  # a bad signature, a malformed header
        return {"error": f"{type(error).__name__}: {error}"}


async def request(args):
    kp = nkeys.from_seed(args.seed.encode())
    nc = await nats.connect(args.url, allow_reconnect=False)
    try:
        payload = args.payload.encode()
        request_id = json.loads(args.payload).get("id")
        nonce = args.nonce or secrets.token_urlsafe(18)
        ts = args.ts or now_ts()
        inbox = args.reply_to or nc.new_inbox()
        sent = payload + b" " if args.tamper else payload
        header = sender_header(kp, args.subject, inbox, payload, ts, nonce)
        replies = await nc.subscribe(inbox)
        await nc.flush()
        for _ in range(args.times):
            headers = {"Pier-Sender": header}
            if args.js:
                headers["Pier-Reply-To"] = inbox
                await nc.jetstream().publish(args.subject, sent, headers=headers)
            else:
                await nc.publish(args.subject, sent, reply=inbox, headers=headers)
            msg = await replies.next_msg(timeout=10)
            print(json.dumps({"reply": json.loads(msg.data), "worker": check_worker(msg.headers, msg.data, request_id, nonce)}), flush=True)
    finally:
        await nc.close()


async def respond(args):
    kp = nkeys.from_seed(args.seed.encode())
    nc = await nats.connect(args.url, allow_reconnect=False)
    try:
        sub = await nc.subscribe(args.subject)
        await nc.flush()
        print("ready", flush=True)
        msg = await sub.next_msg(timeout=30)
        job = json.loads(msg.data)
        body = json.dumps({"version": "1.0", "id": job["id"], "type": "task_result", "ok": True, "result": f"py:{job['task']}",
                           "latencyMs": 1, "worker": {"id": "py-worker", "wallet": None}}).encode()
        nonce = ""
        if msg.headers and "Pier-Sender" in msg.headers:
            nonce = json.loads(msg.headers["Pier-Sender"])["nonce"]
        key = kp.public_key.decode()
        ts = now_ts()
        lines = ["PIER-RESULT-V1", key, job["id"], nonce, ts, hashlib.sha256(body + (b"x" if args.forge else b"")).hexdigest()]
        sig = b64url(kp.sign("".join(line + "\n" for line in lines).encode()))
        header = json.dumps({"v": 1, "key": key, "ts": ts, "sig": sig}, separators=(",", ":"))
        await nc.publish(msg.reply, body, headers={"Pier-Worker": header})
        await nc.flush()
    finally:
        await nc.close()


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("request")
    for name in ("url", "subject", "seed", "payload"):
        r.add_argument(name)
    r.add_argument("--tamper", action="store_true")
    r.add_argument("--js", action="store_true")
    r.add_argument("--reply-to")
    r.add_argument("--ts")
    r.add_argument("--nonce")
    r.add_argument("--times", type=int, default=1)
    w = sub.add_parser("respond")
    for name in ("url", "subject", "seed"):
        w.add_argument(name)
    w.add_argument("--forge", action="store_true")
    args = parser.parse_args()
    asyncio.run(request(args) if args.cmd == "request" else respond(args))


if __name__ == "__main__":
    sys.exit(main())
