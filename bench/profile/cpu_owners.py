#!/usr/bin/env python3
"""Whose code the server's CPU went to, from `perf script` output of a call-graph profile.

Each sample is charged to the first frame, walking from the leaf towards the thread's start,
that belongs to a known owner: raftkine's own code, its serving layers (coalesced writes, the
authority fix, the codec, metrics), the RPC stack (tonic, hyper, h2, tokio, prost, ...), raft-rs
or sled. Generic frames (core, alloc, std, libc, jemalloc, hash maps) are skipped, so a memcpy
or an allocation is charged to whoever asked for it. Kernel samples are charged by what the
kernel was doing: TCP, disk, or the rest (scheduling, futexes, epoll, page faults).

Usage: perf script -i perf.data | python3 cpu_owners.py
"""

import collections
import re
import sys

GENERIC = re.compile(
    r"^<?(core|alloc|std|hashbrown|indexmap|smallvec|parking_lot|lock_api|crossbeam\w*|"
    r"once_cell|arc_swap|crc32fast|tikv_jemalloc\w*)::"
    r"|^(__|_rjem|je_|tcache|do_rallocx|memmove|memcpy|malloc|free|realloc|cfree|_int_)"
    r"|^(<&|<T as|<\[|\[unknown\]|0x)"
)
SERVING_LAYERS = (
    "raftkine::coalesce",
    "raftkine::authority",
    "raftkine::grpc_codec",
    "raftkine::grpc_metrics",
    "raftkine::server",
    "raftkine::http2_frame",
    "raftkine::tls",
)
RPC_CRATES = {
    "h2", "hyper", "hyper_util", "http", "http_body", "http_body_util", "tonic", "tonic_prost",
    "tower", "tower_layer", "tower_service", "axum", "bytes", "tokio", "tokio_util",
    "tokio_stream", "loona_hpack", "futures_util", "futures_core", "mio", "tracing", "prost",
    "matchit", "percent_encoding",
}
RPC = "RPC stack (tonic, hyper, h2, tokio, prost)"
KERNEL_DISK = re.compile(r"fdatasync|fsync|pwrite|ext4|jbd2|blk_|file_write")
KERNEL_TCP = re.compile(r"tcp|sendto|recvfrom|sock|inet|ip_|net_rx|skb|dev_queue|loopback")


def owner_of_frame(frame):
    """The owner of one user-space frame, or None for a generic frame."""
    if GENERIC.match(frame):
        return None
    if frame.lstrip("<").startswith("raftkine::proto") or "_server::" in frame:
        return RPC  # tonic's generated service code
    if any(frame.lstrip("<").startswith(layer) for layer in SERVING_LAYERS):
        return "raftkine serving layers"
    m = re.match(r"<*([A-Za-z_0-9]+)::", frame)
    if not m:
        return None
    crate = m.group(1)
    if crate == "raftkine":
        return "raftkine"
    if crate in ("raft", "raft_proto", "protobuf"):
        return "raft-rs"
    if crate == "sled":
        return "sled"
    if crate in RPC_CRATES:
        return RPC
    return "other: " + crate


def owner_of_sample(frames):
    """frames: (symbol, is_kernel) from the leaf up."""
    kernel = []
    for symbol, is_kernel in frames:
        if is_kernel:
            kernel.append(symbol)
            continue
        owner = owner_of_frame(symbol)
        if owner is None:
            continue
        if kernel:
            break
        return owner
    if kernel:
        k = " ".join(kernel)
        if KERNEL_DISK.search(k):
            return "kernel: disk"
        if KERNEL_TCP.search(k):
            return "kernel: TCP"
        return "kernel: other (scheduling, futex, epoll, mm)"
    return "unattributed"


def samples(text):
    for block in text.split("\n\n"):
        lines = [l for l in block.strip().split("\n") if l.strip()]
        if len(lines) < 2:
            continue
        thread = lines[0].split()[0]
        frames = []
        for line in lines[1:]:
            body = re.sub(r"^\s*[0-9a-f]+ ", "", line)
            symbol = body.split("+0x")[0].split(" (")[0].strip()
            frames.append((symbol, "kernel.kallsyms" in body))
        yield thread, frames


def thread_group(thread):
    if thread == "raft":
        return "raft thread"
    if thread.startswith("tokio"):
        return "gRPC workers"
    return "other threads"


def main():
    by_owner = collections.Counter()
    by_thread_owner = collections.Counter()
    total = 0
    for thread, frames in samples(sys.stdin.read()):
        owner = owner_of_sample(frames)
        by_owner[owner] += 1
        by_thread_owner[(thread_group(thread), owner)] += 1
        total += 1
    if total == 0:
        sys.exit("no samples with call chains (record with --call-graph dwarf)")
    print(f"{total} samples\n\nby owner:")
    for owner, n in by_owner.most_common():
        print(f"{100 * n / total:6.1f} %  {owner}")
    print("\nby thread and owner (0.5 % and more):")
    for (group, owner), n in by_thread_owner.most_common():
        if 100 * n / total >= 0.5:
            print(f"{100 * n / total:6.1f} %  {group:14s} {owner}")


if __name__ == "__main__":
    main()
