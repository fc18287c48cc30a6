#!/usr/bin/env python3
"""Data and report for bench/snapshot.sh (issue 4's snapshot benchmark).

Subcommands:
  generate DIR [--seed N]   write the 2 GiB reth-like data dir: 24 immutable 64 MiB files under
                            static_files/ and one 512 MiB db/mdbx.dat; skips files that are
                            already there with the right size (a stamp under DIR's parent
                            records the seed, so a changed seed rewrites everything)
  change DIR [--seed N]     the "1% scattered in-place change": rewrites 1% of db/mdbx.dat's
                            bytes as distinct random 4 KiB-aligned pages (MDBX's page size),
                            in place (same inode, positioned writes), then fsyncs; prints JSON
  reset DIR [--seed N]      writes db/mdbx.dat's original content back (undoes `change`)
  report RESULTS.tsv        prints the Markdown tables and the ratios from the timings

Contents are SHAKE-128 output keyed by (seed, file name, 8 MiB block index): deterministic on
every machine and Python version, incompressible (zstd cannot help, as with much of real chain
data), and no two files or blocks alike (so dedup across files finds nothing, which is the
honest case). Only the standard library is used.
"""

import argparse
import hashlib
import json
import os
import random
import statistics
import sys

MIB = 1024 * 1024
# The layout: 24 files of 64 MiB that never change, one 512 MiB file changed in place.
IMMUTABLE_FILES = 24
IMMUTABLE_SIZE = 64 * MIB
MDBX_PATH = os.path.join("db", "mdbx.dat")
MDBX_SIZE = 512 * MIB
# MDBX's default page size on Linux is 4 KiB; a write transaction rewrites whole pages.
PAGE = 4096
CHANGE_FRACTION = 0.01
# Generation block: 8 MiB keeps memory small and SHAKE calls few.
BLOCK = 8 * MIB
DEFAULT_SEED = 20261129


def immutable_names():
    """reth-like static file names: 3 segments x 8 block ranges."""
    names = []
    for segment in ("headers", "transactions", "receipts"):
        for i in range(IMMUTABLE_FILES // 3):
            start = i * 500_000
            names.append(os.path.join("static_files", f"static_file_{segment}_{start}_{start + 499_999}"))
    return names


def block_bytes(seed, name, index, size):
    key = f"{seed}/{name}/{index}".encode()
    return hashlib.shake_128(key).digest(size)


def write_file(path, seed, name, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for index, offset in enumerate(range(0, size, BLOCK)):
            data = block_bytes(seed, name, index, min(BLOCK, size - offset))
            os.pwrite(fd, data, offset)
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)


def generate(directory, seed):
    stamp = os.path.join(os.path.dirname(os.path.abspath(directory)), ".snapshot-data-seed")
    fresh = not (os.path.exists(stamp) and open(stamp).read().strip() == str(seed))
    files = [(name, IMMUTABLE_SIZE) for name in immutable_names()] + [(MDBX_PATH, MDBX_SIZE)]
    written = 0
    for name, size in files:
        path = os.path.join(directory, name)
        # mdbx.dat is always rewritten: it may hold the change from an interrupted run.
        if fresh or name == MDBX_PATH or not os.path.exists(path) or os.path.getsize(path) != size:
            write_file(path, seed, name, size)
            written += 1
    if fresh:
        with open(stamp, "w") as f:
            f.write(f"{seed}\n")
    total = sum(size for _, size in files)
    print(json.dumps({"files": len(files), "written": written, "bytes_total": total}))


def changed_pages(seed):
    pages = MDBX_SIZE // PAGE
    count = round(MDBX_SIZE * CHANGE_FRACTION / PAGE)
    return sorted(random.Random(seed).sample(range(pages), count))


def change(directory, seed):
    path = os.path.join(directory, MDBX_PATH)
    pages = changed_pages(seed)
    new = hashlib.shake_128(f"{seed}/change".encode()).digest(len(pages) * PAGE)
    fd = os.open(path, os.O_WRONLY)
    try:
        for i, page in enumerate(pages):
            os.pwrite(fd, new[i * PAGE:(i + 1) * PAGE], page * PAGE)
        os.fsync(fd)
    finally:
        os.close(fd)
    chunk = 32 * 1024
    print(json.dumps({
        "file": MDBX_PATH,
        "pages": len(pages),
        "bytes_changed": len(pages) * PAGE,
        "share_of_file": len(pages) * PAGE / MDBX_SIZE,
        "share_of_data": len(pages) * PAGE / (MDBX_SIZE + IMMUTABLE_FILES * IMMUTABLE_SIZE),
        # For reading the result: how many 32 KiB chunks (the reth profile's in-place chunk
        # size) the change touches.
        "chunks_32k_touched": len({page * PAGE // chunk for page in pages}),
    }))


def reset(directory, seed):
    write_file(os.path.join(directory, MDBX_PATH), seed, MDBX_PATH, MDBX_SIZE)


# ---- report -------------------------------------------------------------------------------

def fmt_mib_s(nbytes, seconds):
    return f"{nbytes / MIB / seconds:,.0f}" if seconds > 0 else "-"


def report(path):
    rows = []
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            values = dict(zip(header, line.rstrip("\n").split("\t")))
            rows.append(values)
    if not rows:
        sys.exit("no results")
    steps = []
    for r in rows:
        if r["step"] not in steps:
            steps.append(r["step"])
    rounds = sorted({int(r["round"]) for r in rows})

    def get(rnd, step):
        for r in rows:
            if int(r["round"]) == rnd and r["step"] == step:
                return r
        return None

    print("| round | step | bytes moved | seconds (command) | seconds (+ sync) | MiB/s (+ sync) "
          "| MiB/s (command) | CPU s, command | CPU s, s3s-fs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rnd in rounds:
        for step in steps:
            r = get(rnd, step)
            if r is None:
                continue
            moved = int(r["bytes_moved"])
            cmd = float(r["seconds_cmd"])
            full = float(r["seconds_sync"])
            base = int(r["bytes_data"])
            print(f"| {rnd} | {step} | {moved:,} | {cmd:.2f} | {full:.2f} | "
                  f"{fmt_mib_s(base, full)} | {fmt_mib_s(base, cmd)} | "
                  f"{float(r['cpu_client']):.2f} | {float(r['cpu_server']):.2f} |")
    print()
    print("MiB/s: the data dir's size over the time (for the incremental steps too: each looks at")
    print("the whole dir); 'bytes moved': what the step sent or fetched (for cp -r, what it copied);")
    print("CPU s: user + system seconds of the command and of the s3s-fs server during the step.")
    print()

    print("| step | seconds (+ sync), mean | MiB/s (+ sync), mean | CPU s, command | CPU s, s3s-fs |")
    print("|---|---|---|---|---|")
    for step in steps:
        mine = [r for r in rows if r["step"] == step]
        full = statistics.fmean(float(r["seconds_sync"]) for r in mine)
        base = int(mine[0]["bytes_data"])
        cpu_c = statistics.fmean(float(r["cpu_client"]) for r in mine)
        cpu_s = statistics.fmean(float(r["cpu_server"]) for r in mine)
        print(f"| {step} | {full:.2f} | {fmt_mib_s(base, full)} | {cpu_c:.2f} | {cpu_s:.2f} |")
    print()

    def ratio(rnd, num, den, key):
        a, b = get(rnd, num), get(rnd, den)
        if a is None or b is None:
            return None
        return float(b[key]) / float(a[key])  # time ratio inverted = throughput ratio

    def share(rnd, step):
        r = get(rnd, step)
        if r is None:
            return None
        return int(r["bytes_moved"]) / int(r["bytes_data"])

    lines = [
        ("restore / cp -r (throughput, + sync)", lambda n: ratio(n, "restore", "cp -r", "seconds_sync"), ">= 0.8x", lambda v: v >= 0.8, "x"),
        ("restore / cp -r (throughput, command only)", lambda n: ratio(n, "restore", "cp -r", "seconds_cmd"), "(context)", None, "x"),
        ("restore from file:// / cp -r (+ sync): the engine without the server", lambda n: ratio(n, "restore file://", "cp -r", "seconds_sync"), "(context)", None, "x"),
        ("restore / aws s3 sync download (+ sync)", lambda n: ratio(n, "restore", "aws sync down", "seconds_sync"), ">= 3x", lambda v: v >= 3.0, "x"),
        ("restore / aws s3 sync download (command only)", lambda n: ratio(n, "restore", "aws sync down", "seconds_cmd"), "(context)", None, "x"),
        ("create (full) / aws s3 sync upload (+ sync)", lambda n: ratio(n, "create", "aws sync up", "seconds_sync"), "(context)", None, "x"),
        ("incremental create: bytes uploaded / data", lambda n: share(n, "create incr"), "<= 3%", lambda v: v <= 0.03, "%"),
        ("aws s3 sync after the change: bytes re-uploaded / data", lambda n: share(n, "aws sync up incr"), "(issue: 25%)", None, "%"),
    ]
    print("| ratio | " + " | ".join(f"round {n}" for n in rounds) + " | mean | target | result |")
    print("|---|" + "---|" * len(rounds) + "---|---|---|")
    for label, fn, target, check, unit in lines:
        values = [fn(n) for n in rounds]
        present = [v for v in values if v is not None]
        if not present:
            continue
        mean = statistics.fmean(present)

        def show(v):
            if v is None:
                return "-"
            return f"{v:.2f}x" if unit == "x" else f"{v * 100:.2f}%"

        result = "-" if check is None else ("PASS" if all(check(v) for v in present) else "FAIL")
        print(f"| {label} | " + " | ".join(show(v) for v in values) + f" | **{show(mean)}** | {target} | {result} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("generate", "change", "reset"):
        p = sub.add_parser(name)
        p.add_argument("dir")
        p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p = sub.add_parser("report")
    p.add_argument("results")
    args = parser.parse_args()
    if args.command == "generate":
        generate(args.dir, args.seed)
    elif args.command == "change":
        change(args.dir, args.seed)
    elif args.command == "reset":
        reset(args.dir, args.seed)
    else:
        report(args.results)


if __name__ == "__main__":
    main()
