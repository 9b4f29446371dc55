"""Benchmark of the Redis customer store (not a test): writes/s, lookup latency, memory.

Starts its own ``redis-server`` on a free port (state.devstack), so it never touches
another Redis. Prints, in one run:

* guarded customer writes/s in batches of 1,000 for the store's design (one EVALSHA per
  customer, packed with hiredis, one socket write per batch), the same with 1,000
  customers per script call (not Redis Cluster compatible), and the naive baseline
  (redis-py pipeline of one EVALSHA per customer);
* lookups/s and p50/p99 latency of ``SegmentClient.get`` and ``get_many(100)``;
* Redis memory per customer at ``--customers`` customers (``INFO memory`` used_memory
  after minus before, divided by the count), with and without the last-event index.

Run: ``.venv/bin/python bench/bench_redis.py [--customers 1000000] [--writes 200000]``

``--baseline TREE`` (another checkout, e.g. ``git archive HEAD | tar -x -C /tmp/base``)
runs only the consumer-shaped diff writes, this tree's store against the baseline's, each
in its own process; the two take turns round by round on one ``redis-server``, so a change
in the machine's load hits both alike. Medians of ``--rounds`` rounds of ``--writes``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from state import keys as K
from state.devstack import RedisServer
from state.features import CustomerState
from state.lookup import SegmentClient
from state.redis_store import RedisStore
from state.store import CustomerSeed, CustomerUpdate, update_fields

T0 = 1_764_000_000.0  # late November 2025
SEGMENTS = [(1, "Champions"), (2, "Loyal regulars"), (3, "Big spenders"), (4, "At risk")]
BATCH = 1000


def random_state(rng: random.Random) -> CustomerState:
    """A plausible customer: a few orders, money in cents, ms-precision event times."""
    orders = rng.randint(1, 40)
    first = T0 - rng.uniform(0, 400 * 86400)
    last = min(T0, first + rng.uniform(0, 300 * 86400))
    last = round(last, 3)
    return CustomerState(
        orders=orders,
        refunds=rng.randint(0, 2),
        gross_cents=orders * rng.randint(500, 40000),
        refunded_cents=rng.randint(0, 5000),
        discount_cents=rng.randint(0, 20000),
        items=orders * rng.randint(1, 4),
        first_ts=round(first, 3),
        last_ts=last,
        spend_decayed=rng.uniform(0, 5000),
        orders_decayed=rng.uniform(0, 10),
        decay_ts=last,
        age=float(rng.randint(18, 80)),
        gender=rng.choice(["Male", "Female"]),
        annual_income=float(rng.randint(15, 140)),
        profile_ts=round(first, 3),
    )


def make_updates(ids: Sequence[str], offset0: int, rng: random.Random) -> list[CustomerUpdate]:
    out = []
    for n, cid in enumerate(ids):
        state = random_state(rng)
        seg_id, seg_name = SEGMENTS[n % len(SEGMENTS)]
        out.append(
            CustomerUpdate(
                customer_id=cid,
                state=state,
                segment_id=seg_id,
                segment_name=seg_name,
                model_version="2026-11-27.1",
                updated_at=T0 + 60,
                partition=n % 12,
                offset=offset0 + n,
                event_ts=state.decay_ts or T0,
            )
        )
    return out


def event_updates(
    prev: Sequence[CustomerUpdate], offset0: int, rng: random.Random
) -> list[CustomerUpdate]:
    """What the consumer writes: each customer's previous state plus one new purchase."""
    from producer.contract import CheckoutEvent
    from state.features import apply_event

    out = []
    for n, u in enumerate(prev):
        ts = round((u.state.decay_ts or T0) + rng.uniform(60, 30 * 86400), 3)
        event = CheckoutEvent(
            event_id=f"e{n}", customer_id=u.customer_id, ts=ts,
            amount=rng.randint(500, 40000) / 100, items=rng.randint(1, 4),
            discount=rng.choice([0.0, 0.0, rng.randint(100, 2000) / 100]),
        )  # fmt: skip
        out.append(
            dataclasses.replace(
                u, state=apply_event(u.state, event), updated_at=ts + 0.5,
                offset=offset0 + n, event_ts=ts,
            )
        )  # fmt: skip
    return out


def batches(items: list[CustomerUpdate]) -> list[list[CustomerUpdate]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def server_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def rate(
    label: str,
    fn: Callable[[list[CustomerUpdate]], object],
    items: list[CustomerUpdate],
    client: redis.Redis,
    *,
    quiet: bool = False,
) -> tuple[float, float, float]:
    """Writes/s (wall clock), and CPU microseconds per write in this process and in Redis.

    The CPU figures depend far less than wall time on what else runs on the machine. With
    one batch in flight the client and Redis mostly take turns, so a machine with two free
    cores reaches about 1e6 / (client + server) writes/s, and at most 1e6 / max(...) if the
    chunked send overlapped them perfectly.
    """
    srv0, cpu0, start = server_cpu(client), time.process_time(), time.perf_counter()
    for batch in batches(items):
        fn(batch)
    wall = time.perf_counter() - start
    client_us = (time.process_time() - cpu0) / len(items) * 1e6
    server_us = (server_cpu(client) - srv0) / len(items) * 1e6
    per_s = len(items) / wall
    if quiet:
        return per_s, client_us, server_us
    print(
        f"  {label:<58} {per_s:>8,.0f}/s  CPU per write: client {client_us:5.1f} us,"
        f" redis {server_us:5.1f} us (1e6/sum {1e6 / (client_us + server_us):,.0f}/s)"
    )
    return per_s, client_us, server_us


def interleaved(
    client: redis.Redis, variants: dict[str, dict[str, object]], n: int, rounds: int
) -> None:
    """Consumer-shaped writes: ``n`` new customers, then ``rounds`` rounds of one purchase
    each. Variants take turns within every round (in rotated order), so a change in the
    machine's load hits all of them alike; medians over the purchase rounds are printed."""
    stores = {
        label: RedisStore(client, prefix=f"i{k}", **opts)  # type: ignore[arg-type]
        for k, (label, opts) in enumerate(variants.items())
    }
    ids = [f"I{i:07d}" for i in range(n)]
    last = {label: make_updates(ids, 1, random.Random(1)) for label in stores}
    new: dict[str, list[tuple[float, float, float]]] = {label: [] for label in stores}
    upd: dict[str, list[tuple[float, float, float]]] = {label: [] for label in stores}
    labels = list(stores)
    for r in range(rounds + 1):
        order = labels[r % len(labels) :] + labels[: r % len(labels)]
        for label in order:
            if r:
                last[label] = event_updates(last[label], 10_000_000 * r, random.Random(r))
            got = rate(label, stores[label].apply_many, last[label], client, quiet=True)
            (upd if r else new)[label].append(got)
    for label in labels:
        for kind, runs in (("new", new[label]), ("+1 purchase", upd[label])):
            wall, cli, srv = (statistics.median(x[i] for x in runs) for i in range(3))
            print(
                f"  {label + ' [' + kind + ']':<58} {wall:>8,.0f}/s  CPU per write: client"
                f" {cli:5.1f} us, redis {srv:5.1f} us (1e6/sum {1e6 / (cli + srv):,.0f}/s)"
                f"  [median of {len(runs)}]"
            )
    client.flushall()


ROUND_CHILD = """
import json, random, sys, time
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/bench"]
import redis
from bench_redis import batches, event_updates, make_updates, server_cpu
from state.redis_store import RedisStore
client = redis.Redis.from_url(sys.argv[2])
n, prefix = int(sys.argv[3]), sys.argv[4]
store = RedisStore(client, prefix=prefix)
last = make_updates([f"I{i:07d}" for i in range(n)], 1, random.Random(1))
for r, _line in enumerate(sys.stdin):  # one round per line: new customers, then purchases
    if r:
        last = event_updates(last, 10_000_000 * r, random.Random(r))
    srv0, cpu0, start = server_cpu(client), time.process_time(), time.perf_counter()
    for batch in batches(last):
        store.apply_many(batch)
    wall = time.perf_counter() - start
    print(json.dumps([n / wall, (time.process_time() - cpu0) / n * 1e6,
                      (server_cpu(client) - srv0) / n * 1e6]), flush=True)
"""


def against_baseline(url: str, baseline: Path, n: int, rounds: int) -> None:
    """Consumer-shaped diff writes of this tree's store and the baseline's, in turns."""
    trees = {"this tree": Path(__file__).resolve().parents[1], "baseline": baseline}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", ROUND_CHILD, str(tree), url, str(n), f"t{k}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=tree,
        )
        for k, (name, tree) in enumerate(trees.items())
    }
    runs: dict[str, list[list[float]]] = {name: [] for name in trees}
    names = list(trees)
    for r in range(rounds + 1):  # round 0 writes the new customers (not counted)
        for name in names[r % 2 :] + names[: r % 2]:
            proc = procs[name]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            got = json.loads(proc.stdout.readline())
            if r:
                runs[name].append(got)
    for proc in procs.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    for name, got in runs.items():
        wall, cli, srv = (statistics.median(x[i] for x in got) for i in range(3))
        print(
            f"  {name + ' [+1 purchase]':<58} {wall:>8,.0f}/s  CPU per write: client"
            f" {cli:5.1f} us, redis {srv:5.1f} us (1e6/sum {1e6 / (cli + srv):,.0f}/s)"
            f"  [median of {len(got)}; client {min(x[1] for x in got):.1f}-"
            f"{max(x[1] for x in got):.1f}, redis {min(x[2] for x in got):.1f}-"
            f"{max(x[2] for x in got):.1f}]"
        )


NAIVE_GUARD = """
local cur = redis.call('HMGET', KEYS[1], ARGV[1], '_as_of', 'segment_id')
if (cur[1] and tonumber(cur[1]) >= tonumber(ARGV[2])) or (cur[2] and tonumber(ARGV[3]) <= tonumber(cur[2])) then
  return {0, cur[3]}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], unpack(ARGV, 4))
return {1, cur[3]}
"""


def naive_writer(client: redis.Redis, prefix: str) -> Callable[[list[CustomerUpdate]], object]:
    """Baseline: redis-py pipeline, one EVALSHA per customer with field/value pairs as ARGV
    (the first design one writes; the same guard, no deletion of unknown fields)."""
    sha = client.script_load(NAIVE_GUARD)
    keys = K.Keys(prefix)

    def write(batch: list[CustomerUpdate]) -> object:
        pipe = client.pipeline(transaction=False)
        for u in batch:
            fields, _absent = update_fields(u)
            pairs = [x for kv in fields.items() for x in kv]
            pipe.evalsha(
                sha, 1, keys.customer(u.customer_id), K.partition_field(u.partition),
                u.offset, K.number(u.event_ts), *pairs,
            )  # fmt: skip
        return pipe.execute()

    return write


def plain_hset_writer(client: redis.Redis, prefix: str) -> Callable[[list[CustomerUpdate]], object]:
    """Reference without any guard: redis-py pipeline of one HSET per customer."""
    keys = K.Keys(prefix)

    def write(batch: list[CustomerUpdate]) -> object:
        pipe = client.pipeline(transaction=False)
        for u in batch:
            pipe.hset(keys.customer(u.customer_id), mapping=update_fields(u)[0])
        return pipe.execute()

    return write


def latency(label: str, fn: Callable[[], object], n: int) -> None:
    """Calls/s and wall-clock p50/p99 per call, and this process's CPU time per call."""
    samples = []
    cpu0 = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu0) / n * 1e3
    samples.sort()
    p50 = samples[len(samples) // 2] * 1e3
    p99 = samples[int(len(samples) * 0.99)] * 1e3
    print(
        f"  {label:<30} {n / sum(samples):>9,.0f} calls/s  p50 {p50:.3f} ms  p99 {p99:.3f} ms"
        f"  (mean {statistics.fmean(samples) * 1e3:.3f} ms, client CPU {cpu:.3f} ms/call)"
    )


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def seed(store: RedisStore, n: int, rng: random.Random, start: int = 0) -> None:
    for lo in range(start, start + n, BATCH):
        ups = make_updates([f"CS{i:07d}" for i in range(lo, min(lo + BATCH, start + n))], 1, rng)
        store.put_initial_many(
            [
                CustomerSeed(
                    customer_id=u.customer_id, state=u.state, segment_id=u.segment_id,
                    segment_name=u.segment_name, model_version=u.model_version,
                    updated_at=u.updated_at, as_of=T0 - 86400 * 400,
                )
                for u in ups
            ]
        )  # fmt: skip


def lua_breakdown(client: redis.Redis, n: int, rng: random.Random) -> None:
    """Redis CPU per call of growing parts of the guard script (one key per call)."""
    import msgspec

    from state.redis_store import pack_command

    steps = {
        "EVALSHA of 'return 1' (call overhead)": "return 1",
        "+ cmsgpack.unpack of the record": "local r = cmsgpack.unpack(ARGV[2]) return 1",
        "+ HMGET of the guard fields": "local r = cmsgpack.unpack(ARGV[2])[1] "
        "redis.call('HMGET', KEYS[1], 'segment_id', r[4], '_as_of') return 1",
        "+ HSET of the ~20 fields (no check)": "local r = cmsgpack.unpack(ARGV[2])[1] "
        "redis.call('HMGET', KEYS[1], 'segment_id', r[4], '_as_of') "
        "redis.call('HSET', KEYS[1], unpack(r, 4)) return 1",
    }
    encode = msgspec.msgpack.Encoder().encode
    ups = make_updates([f"L{i:07d}" for i in range(n)], 1, rng)
    blobs = []
    for u in ups:
        pairs, absent = K.state_pairs(u.state)
        record = ["a", K.number(u.event_ts), len(absent), *absent, K.partition_field(u.partition),
                  str(u.offset), *[x for kv in update_fields(u)[0].items() for x in kv][-8:], *pairs]  # fmt: skip
        blobs.append(encode([record]))
    conn = client.connection_pool.get_connection()
    try:
        for label, body in steps.items():
            sha = client.script_load(body)
            payload = [
                pack_command(("EVALSHA", sha, "1", f"lua:{u.customer_id}", "0", b))
                for u, b in zip(ups, blobs, strict=True)
            ]
            cpu0 = server_cpu(client)
            for lo in range(0, n, BATCH):
                conn.send_packed_command([b"".join(payload[lo : lo + BATCH])])
                for _ in range(min(BATCH, n - lo)):
                    conn.read_response()
            print(f"  {label:<44} {(server_cpu(client) - cpu0) / n * 1e6:6.1f} us of Redis CPU")
    finally:
        client.connection_pool.release(conn)
    client.flushall()


def layouts(client: redis.Redis, n: int, rng: random.Random) -> None:
    """Memory per customer of other layouts we considered (plain pipelined writes, no index)."""
    import msgspec

    pack = msgspec.msgpack.Encoder().encode
    short = {name: name[:1] + str(i) for i, name in enumerate(K.PUBLIC_FIELDS)}

    def readable(u: CustomerUpdate) -> dict[str, str | bytes]:
        return {**update_fields(u)[0], "_p3": str(u.offset), K.VERSION: "1764000000123456"}

    defaults = K.encode_state(CustomerState())

    def no_defaults(u: CustomerUpdate) -> dict[str, str | bytes]:
        return {k: v for k, v in readable(u).items() if defaults.get(k) != v}

    def short_names(u: CustomerUpdate) -> dict[str, str | bytes]:
        return {short.get(k, k): v for k, v in readable(u).items()}

    required = [f for f in K.PUBLIC_FIELDS if f != "profile_ts"]  # the 18 the issue names

    def names_only(u: CustomerUpdate) -> dict[str, str | bytes]:
        return dict.fromkeys(required, "1")

    def packed_state(u: CustomerUpdate) -> dict[str, str | bytes]:
        seg = {k: v for k, v in readable(u).items() if k in K.SEGMENT_FIELDS or k == "_p3"}
        return {**seg, "state": pack(K.state_values(u.state))}

    variants: list[tuple[str, Callable[[CustomerUpdate], dict[str, str | bytes]], int]] = [
        ("readable hash, the store's layout", readable, 64),
        ("readable hash, fields equal to their default left out", no_defaults, 64),
        ("readable hash, 2-character field names", short_names, 64),
        ("the 18 fields the contract names, every value '1'", names_only, 64),
        ("segment fields + state as one msgpack field", packed_state, 64),
        ("  same, CONFIG SET hash-max-listpack-value 256", packed_state, 256),
    ]
    default_value = client.config_get("hash-max-listpack-value")["hash-max-listpack-value"]
    for label, make, max_value in variants:
        client.flushall()
        client.config_set("hash-max-listpack-value", max_value)
        before = used_memory(client)
        for lo in range(0, n, BATCH):
            ids = [f"CS{i:07d}" for i in range(lo, min(lo + BATCH, n))]
            pipe = client.pipeline(transaction=False)
            for u in make_updates(ids, 1, rng):
                pipe.hset(K.Keys("seg").customer(u.customer_id), mapping=make(u))
            pipe.execute()
        per = (used_memory(client) - before) / n
        enc = client.object("encoding", K.Keys("seg").customer("CS0000000"))
        print(f"  {label:<50} {per:7.1f} bytes/customer ({enc.decode()})")
    client.flushall()
    client.config_set("hash-max-listpack-value", default_value)
    before = used_memory(client)
    for lo in range(0, n, BATCH):
        ids = [f"CS{i:07d}" for i in range(lo, min(lo + BATCH, n))]
        pipe = client.pipeline(transaction=False)
        for u in make_updates(ids, 1, rng):
            pipe.set(K.Keys("seg").customer(u.customer_id), pack(list(readable(u).values())))
        pipe.execute()
    per = (used_memory(client) - before) / n
    print(f"  {'one msgpack string per customer (no field names)':<50} {per:7.1f} bytes/customer")
    client.flushall()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--customers", type=int, default=1_000_000, help="for the memory figure (0: skip)"
    )
    parser.add_argument("--writes", type=int, default=200_000, help="writes per write variant")
    parser.add_argument(
        "--rounds", type=int, default=6, help="purchase rounds of the consumer-shaped writes"
    )
    parser.add_argument("--lookups", type=int, default=20_000, help="samples of get() (0: skip)")
    parser.add_argument(
        "--layouts", type=int, default=100_000, help="customers per alternative layout (0: skip)"
    )
    parser.add_argument(
        "--baseline", type=Path, help="compare with another tree (consumer-shaped writes only)"
    )
    args = parser.parse_args(argv)
    rng = random.Random(42)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()},"
        f" load average now {os.getloadavg()[0]:.1f} (other work on the machine inflates wall times)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        server = RedisServer(workdir=Path(tmp)).start()
        try:
            client = redis.Redis.from_url(server.url)
            print(f"redis-server {client.info('server')['redis_version']} on {server.url}")
            print(f"redis-py {redis.__version__}, hiredis parser: {redis.utils.HIREDIS_AVAILABLE}")
            if args.baseline:
                print(f"consumer-shaped diff writes, batches of {BATCH}, {args.writes:,} "
                      f"customers, {args.rounds} rounds, this tree and {args.baseline} in turns:")  # fmt: skip
                against_baseline(server.url, args.baseline, args.writes, args.rounds)
                print(f"load average now {os.getloadavg()[0]:.1f}")
                return 0

            print(f"guarded writes, batches of {BATCH}, {args.writes:,} customers per variant "
                  "(each customer written once fresh, then updated with higher offsets):")  # fmt: skip
            ids = [f"W{i:07d}" for i in range(args.writes)]
            print(
                f"  consumer-shaped: new customers, then {args.rounds} rounds of one purchase each"
            )
            interleaved(
                client,
                {
                    "store, full records (remember=0)": {"remember": 0},
                    "store, diff writes (the default)": {},
                },
                args.writes,
                args.rounds,
            )
            print("  random full states (every field changes):")
            for label, prefix, make in (
                ("store: 1 EVALSHA/customer, hiredis-packed (cluster-safe)", "b1", 1),
                ("store without the recency index", "b5", "noindex"),
                ("store, keys_per_script=16 (NOT cluster-safe)", "b2", 16),
                ("store, keys_per_script=1000 (NOT cluster-safe)", "b6", BATCH),
                ("naive: redis-py pipeline, 1 EVALSHA/customer", "b3", "naive"),
                ("reference, no guard: redis-py pipeline of HSET", "b4", "hset"),
            ):
                if make == "naive":
                    fn = naive_writer(client, prefix)
                elif make == "hset":
                    fn = plain_hset_writer(client, prefix)
                elif make == "noindex":
                    fn = RedisStore(client, prefix=prefix, last_event_index=False).apply_many
                else:
                    store = RedisStore(client, prefix=prefix, keys_per_script=int(make))
                    fn = store.apply_many
                fresh = make_updates(ids, 1, rng)
                again = make_updates(ids, 10_000_000, rng)
                rate(f"{label} [new]", fn, fresh, client)
                rate(f"{label} [update]", fn, again, client)
                client.flushall()

            if args.lookups:
                print(f"lookups on {args.lookups:,} customers (SegmentClient, derived features):")
                store = RedisStore(client, prefix="seg")
                seed(store, args.lookups, rng)
                seg = SegmentClient(server.url, prefix="seg")
                look_ids = [f"CS{i:07d}" for i in range(args.lookups)]
                it = iter(look_ids * 2)
                latency("get(id)", lambda: seg.get(next(it)), args.lookups)
                groups = [look_ids[i : i + 100] for i in range(0, len(look_ids), 100)]
                git = iter(groups * 10)
                latency(
                    "get_many(100 ids)",
                    lambda: seg.get_many(next(git)),
                    min(2000, len(groups) * 10),
                )
                raw = store
                rit = iter(look_ids * 2)
                latency("RedisStore.get(id) (no derive)", lambda: raw.get(next(rit)), args.lookups)
                seg.close()
                client.flushall()

            if args.customers:
                print(f"memory at {args.customers:,} customers (INFO memory used_memory delta):")
                before = used_memory(client)
                store = RedisStore(client, prefix="seg")
                start = time.perf_counter()
                seed(store, args.customers, rng)
                took = time.perf_counter() - start
                after = used_memory(client)
                index_bytes = int(
                    client.memory_usage(K.Keys("seg").last_event_index, samples=0) or 0
                )
                per = (after - before) / args.customers
                print(f"  seeded in {took:.1f} s ({args.customers / took:,.0f} customers/s)")
                print(f"  per customer, all keys:            {per:8.1f} bytes")
                print(
                    f"  per customer, without the index:   {(after - before - index_bytes) / args.customers:8.1f} bytes"
                )
                sample = client.memory_usage(K.Keys("seg").customer("CS0000001"), samples=0)
                print(f"  MEMORY USAGE of one customer hash: {sample} bytes "
                      f"(encoding {client.object('encoding', K.Keys('seg').customer('CS0000001'))!r})")  # fmt: skip
                fields = client.hgetall(K.Keys("seg").customer("CS0000001"))
                print(
                    f"  fields: {len(fields)}, field+value bytes: {sum(len(k) + len(v) for k, v in fields.items())}"
                )
            print("Redis CPU of the parts of a guarded write (20,000 calls each):")
            lua_breakdown(client, 20_000, rng)
            if args.layouts:
                print(f"other layouts at {args.layouts:,} customers (not used; for the record):")
                layouts(client, args.layouts, rng)
            client.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
