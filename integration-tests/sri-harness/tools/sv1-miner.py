#!/usr/bin/env python3
"""Tiny Sv1 CPU miner for manual checks of a Sv1 server (e.g. SRI's translator_sv2).

    tools/sv1-miner.py HOST PORT SHARES [USERNAME]

Subscribes, authorizes, mines on the latest mining.notify with hashlib and submits SHARES shares,
printing every line it receives (`<-`) and every submit (`->`). Pure Python (~1 MH/s at best),
so only usable with tiny share difficulties: with translator_sv2, set
`min_individual_miner_hashrate = 10_000.0` (difficulty ~2.3e-5, a share per ~100k hashes).
Exits non-zero if the server closes the connection; gives up after 120 s.
"""
import hashlib
import json
import socket
import struct
import sys
import time

host, port, want = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
user = sys.argv[4] if len(sys.argv) > 4 else "tb1qa0sm0hxzj0x25rh8gw5xlzwlsfvvyz8u96w3p8.w1"
DIFF1 = 0x00000000FFFF0000000000000000000000000000000000000000000000000000

s = socket.create_connection((host, port))
s.settimeout(0.001)


def send(obj):
    s.sendall((json.dumps(obj) + "\n").encode())


def dsha(b):
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


state = {"en1": None, "en2size": None, "diff": None, "job": None}
buf = ""


def handle(line):
    m = json.loads(line)
    print("<-", line[:200], flush=True)
    if m.get("id") == 1 and m.get("result"):
        state["en1"], state["en2size"] = m["result"][1], m["result"][2]
    if m.get("method") == "mining.set_difficulty":
        state["diff"] = m["params"][0]
    if m.get("method") == "mining.notify":
        state["job"] = m["params"]


def poll():
    global buf
    try:
        data = s.recv(65536).decode()
        if not data:
            sys.exit("connection closed")
        buf += data
    except socket.timeout:
        pass
    while "\n" in buf:
        line, buf = buf.split("\n", 1)
        if line.strip():
            handle(line)


send({"id": 1, "method": "mining.subscribe", "params": ["sv1-miner.py/0.1"]})
send({"id": 2, "method": "mining.authorize", "params": [user, "x"]})
found, next_id, deadline = 0, 10, time.time() + 120
while found < want and time.time() < deadline:
    poll()
    if not (state["en1"] and state["diff"] and state["job"]):
        continue
    job = state["job"]
    jid, prev, cb1, cb2, branches, ver, nbits, ntime = job[:8]
    target = int(DIFF1 / state["diff"])
    en2 = struct.pack(">Q", found + 1).hex()[-state["en2size"] * 2:].rjust(state["en2size"] * 2, "0")
    root = dsha(bytes.fromhex(cb1 + state["en1"] + en2 + cb2))
    for branch in branches:
        root = dsha(root + bytes.fromhex(branch))
    p = bytes.fromhex(prev)
    p = b"".join(p[i:i + 4][::-1] for i in range(0, 32, 4))
    header = bytes.fromhex(ver)[::-1] + p + root + bytes.fromhex(ntime)[::-1] + bytes.fromhex(nbits)[::-1]
    for nonce in range(1 << 32):
        if int.from_bytes(dsha(header + struct.pack("<I", nonce)), "little") <= target:
            next_id += 1
            send({"id": next_id, "method": "mining.submit", "params": [user, jid, en2, ntime, "%08x" % nonce]})
            print("-> submit job", jid, "nonce", nonce, flush=True)
            found += 1
            break
        if nonce % 20000 == 0:
            poll()
            if state["job"] is not job:
                break
end = time.time() + 3
while time.time() < end:
    poll()
