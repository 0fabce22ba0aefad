#!/usr/bin/env python3
"""frames_gen.py - writes frames.json, the golden sync frames (proto/PROTOCOL.md, "Frames").

An encoder independent of lib/sync/frame.c: a few lines of msgpack by hand, and digests with
Python's hashlib. Run it from this directory after a deliberate format change and review the diff:
    python3 frames_gen.py > frames.json
"""
import hashlib
import json

def uint(v):
    if v <= 0x7f: return bytes([v])
    if v <= 0xff: return b"\xcc" + v.to_bytes(1, "big")
    if v <= 0xffff: return b"\xcd" + v.to_bytes(2, "big")
    if v <= 0xffffffff: return b"\xce" + v.to_bytes(4, "big")
    return b"\xcf" + v.to_bytes(8, "big")

def arr(n):
    if n <= 15: return bytes([0x90 | n])
    if n <= 0xffff: return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")

def bin_(b):
    n = len(b)
    if n <= 0xff: return b"\xc4" + bytes([n]) + b
    if n <= 0xffff: return b"\xc5" + n.to_bytes(2, "big") + b
    return b"\xc6" + n.to_bytes(4, "big") + b

def str_(s):
    b = s.encode()
    n = len(b)
    if n <= 31: return bytes([0xa0 | n]) + b
    if n <= 0xff: return b"\xd9" + bytes([n]) + b
    return b"\xda" + n.to_bytes(2, "big") + b

def digest(entries):
    h = hashlib.blake2b(digest_size=32)
    h.update(b"meshsync/vector/v1")
    for sid, seq in entries:
        h.update(sid.to_bytes(8, "big") + seq.to_bytes(8, "big"))
    return h.digest()[:16]

def entries_bytes(entries):
    out = arr(2 * len(entries))
    for sid, seq in entries:
        out += uint(sid) + uint(seq)
    return out

def records_bytes(records):
    out = arr(2 * len(records))
    for op, sig in records:
        out += bin_(op) + bin_(sig)
    return out

def ents(entries):
    return [[str(s), str(q)] for s, q in entries]

valid, invalid = [], []

def hello(name, comment, version, fno, vmin, flags, dg, total, entries, extra=b"", n_extra=0,
          full_digest=False, reencode=True, decoded_flags=None):
    b = arr(8 + n_extra) + uint(1) + uint(version) + uint(fno) + uint(vmin) + uint(flags)
    b += bin_(dg) + uint(total) + entries_bytes(entries) + extra
    valid.append({"name": name, "comment": comment, "hex": b.hex(), "reencode": reencode,
                  "frame": {"type": "HELLO", "version": version, "fno": fno,
                            "version_min": vmin,
                            "flags": flags if decoded_flags is None else decoded_flags,
                            "digest": dg.hex(), "digest_is_of_entries": full_digest,
                            "total": total, "entries": ents(entries), "extra": n_extra}})

e2 = [(0x0123456789abcdef, 42), (0xfedcba9876543210, 300)]
hello("hello-empty", "first meeting, nothing held: a full (flags 1) empty vector",
      1, 1, 1, 1, digest([]), 0, [], full_digest=True)
hello("hello-full", "a full vector of two streams; the digest covers the entries",
      1, 1, 1, 1, digest(e2), 2, e2, full_digest=True)
hello("hello-delta", "a delta (flags 0): stream 5 now at seq 7, stream 9 no longer held "
      "(seq 0); the digest is of the sender's whole vector, which only the receiver can rebuild",
      1, 1, 1, 0, bytes([0x11] * 16), 2, [(5, 7), (9, 0)])
hello("hello-newer-peer", "a peer speaking versions 1..2 appends a ninth element and sets an "
      "unknown flag: a version 1 reader ignores both (so re-encoding differs)",
      2, 1, 1, 3, digest([]), 0, [], extra=b"\x81\xa1x\x01", n_extra=1, full_digest=True,
      reencode=False, decoded_flags=1)
hello("hello-first-chunk", "the first of several frames: 3 entries announced, 1 here; MORE "
      "frames carry the rest", 1, 1, 1, 1, digest([(1, 1), (2, 2), (3, 3)]), 3, [(1, 1)])

def frame(name, comment, ftype, fields, body, reencode=True):
    valid.append({"name": name, "comment": comment, "hex": body.hex(), "reencode": reencode,
                  "frame": dict({"type": ftype}, **fields)})

frame("more", "continues the HELLO above with entries 2 and 3", "MORE",
      {"version": 1, "fno": 2, "entries": ents([(2, 2), (3, 3)])},
      arr(4) + uint(7) + uint(1) + uint(2) + entries_bytes([(2, 2), (3, 3)]))

create_op = bytes.fromhex(
    "9e0101a9686f757365686f6c64c410019000c79c007112931415161718191a01c42003a107bff3ce10be1d70dd18"
    "e74bc09967e4d6309ba50d5f1ddc8664125531b8b44d5a2f4e414d50554c412f45524154492f4c303101c42000"
    "00000000000000000000000000000000000000000000000000000000000000cf019000c79c000000c0909083a7"
    "6164647265737382a86c61746974756465cbc02bcccccccccccda86c6f63616c697479a54552415449ab6d656d"
    "626572436f756e7404a874656e616e744964a26d7a")
sig = bytes(range(64))
frame("ops-one", "one record: an op (the 'create' op of ops.json) and a signature; the frame "
      "layer does not look inside either", "OPS",
      {"version": 1, "fno": 3, "records": [[create_op.hex(), sig.hex()]]},
      arr(4) + uint(2) + uint(1) + uint(3) + records_bytes([(create_op, sig)]))
recs = [(b"\x01", bytes(64)), (bytes(300), bytes([0xff] * 64))]
frame("ops-two", "two records; the second op takes a bin16 header", "OPS",
      {"version": 1, "fno": 4, "records": [[o.hex(), s.hex()] for o, s in recs]},
      arr(4) + uint(2) + uint(1) + uint(4) + records_bytes(recs))
frame("done", "1234 ops were sent in 5 OPS frames", "DONE",
      {"version": 1, "fno": 7, "ops": 1234, "frames": 5},
      arr(5) + uint(3) + uint(1) + uint(7) + uint(1234) + uint(5))
msg = "peer 0a0b0c0d0e0f1011 broke the sync protocol: frame 5 arrived after frame 3"
frame("error", "code 18 is MESH_EPROTO negated; the message is for the peer's operator", "ERROR",
      {"version": 1, "fno": 2, "code": 18, "message": msg},
      arr(5) + uint(4) + uint(1) + uint(2) + uint(18) + str_(msg))
frame("error-newer-peer", "an ERROR from a version 3 peer, sent before any version was agreed: "
      "its prefix is frozen, so it is read at any version", "ERROR",
      {"version": 3, "fno": 1, "code": 15, "message": "versions 3..3 vs 1..1", "extra": 0},
      arr(5) + uint(4) + uint(3) + uint(1) + uint(15) + str_("versions 3..3 vs 1..1"),
      reencode=True)
frame("want", "asks for the sender's full vector: the delta did not rebuild", "WANT",
      {"version": 1, "fno": 3}, arr(3) + uint(5) + uint(1) + uint(3))
e3 = [(0x10, 1), (0x20, 2), (0x30, 0x100000000)]
frame("vector", "the full vector answering WANT, all three entries in one frame", "VECTOR",
      {"version": 1, "fno": 4, "digest": digest(e3).hex(), "digest_is_of_entries": True,
       "total": 3, "entries": ents(e3)},
      arr(6) + uint(6) + uint(1) + uint(4) + bin_(digest(e3)) + uint(3) + entries_bytes(e3))

def bad(name, comment, body, error="MESH_EPROTO"):
    invalid.append({"name": name, "comment": comment, "hex": body.hex(), "error": error})

done = lambda *parts: arr(5) + uint(3) + uint(1) + uint(7) + b"".join(parts)
bad("long-uint", "DONE's op count 5 written as uint8: not the shortest form",
    done(b"\xcc\x05", uint(5)))
bad("trailing-byte", "a byte after the frame", done(uint(5), uint(5)) + b"\x00")
bad("unknown-type", "frame type 9", arr(3) + uint(9) + uint(1) + uint(1))
bad("version-zero", "protocol version 0", arr(3) + uint(5) + uint(0) + uint(1))
bad("fno-zero", "frame numbers start at 1", arr(3) + uint(5) + uint(1) + uint(0))
bad("too-few-elements", "DONE without its frame count", arr(4) + uint(3) + uint(1) + uint(1) + uint(0))
bad("too-many-elements", "a version 1 WANT with an extra element",
    arr(4) + uint(5) + uint(1) + uint(1) + uint(0))
bad("newer-ops", "an OPS frame of version 2: only HELLO, MORE and ERROR have frozen prefixes",
    arr(4) + uint(2) + uint(2) + uint(1) + arr(0), "MESH_EVERSION")
bad("hello-min-above-max", "lowest version 2, highest 1",
    arr(8) + uint(1) + uint(1) + uint(1) + uint(2) + uint(1) + bin_(digest([])) + uint(0) + arr(0))
bad("hello-unknown-flag", "flag 2 is unknown in version 1",
    arr(8) + uint(1) + uint(1) + uint(1) + uint(1) + uint(3) + bin_(digest([])) + uint(0) + arr(0))
bad("entries-out-of-order", "stream ids must increase",
    arr(4) + uint(7) + uint(1) + uint(2) + entries_bytes([(5, 1), (4, 1)]))
bad("entries-odd", "an entries array of odd length",
    arr(4) + uint(7) + uint(1) + uint(2) + arr(3) + uint(1) + uint(1) + uint(2))
bad("total-over-limit", "70000 entries announced; the limit is 65536",
    arr(6) + uint(6) + uint(1) + uint(1) + bin_(bytes(16)) + uint(70000) + arr(0))
bad("entries-over-total", "2 entries where the total says 1",
    arr(6) + uint(6) + uint(1) + uint(1) + bin_(bytes(16)) + uint(1) + entries_bytes([(1, 1), (2, 1)]))
bad("digest-short", "a 15-byte digest",
    arr(6) + uint(6) + uint(1) + uint(1) + bin_(bytes(15)) + uint(0) + arr(0))
bad("signature-short", "a 63-byte signature",
    arr(4) + uint(2) + uint(1) + uint(1) + arr(2) + bin_(b"\x01") + bin_(bytes(63)))
bad("op-empty", "an op of 0 bytes",
    arr(4) + uint(2) + uint(1) + uint(1) + arr(2) + bin_(b"") + bin_(bytes(64)))
bad("op-as-str", "op bytes must be bin, not str",
    arr(4) + uint(2) + uint(1) + uint(1) + arr(2) + str_("x") + bin_(bytes(64)))
bad("ops-count-lie", "an array header claiming 10000 elements in a short frame",
    arr(4) + uint(2) + uint(1) + uint(1) + b"\xdc\x27\x10" + bin_(b"\x01"))
bad("truncated", "a DONE cut short", done(uint(5))[:-1])
bad("not-an-array", "a frame must be an array", uint(1))
bad("negative-int", "a negative frame number",
    arr(3) + uint(5) + uint(1) + b"\xff")

print(json.dumps({
    "format": 1,
    "comment": "Golden sync frames (proto/PROTOCOL.md, Frames). hex is one frame; frame is its "
               "meaning. Integers that may exceed 2^53 (stream ids, seqs) are decimal strings. "
               "digest_is_of_entries: the digest is BLAKE2b-256('meshsync/vector/v1' || each "
               "entry as sid u64 BE | seq u64 BE) truncated to 16 bytes, computed over the "
               "listed entries. reencode: encoding the decoded frame gives back hex exactly. "
               "Generated by frames_gen.py.",
    "valid": valid,
    "invalid": invalid,
}, indent=2))
