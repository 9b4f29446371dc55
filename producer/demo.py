"""``segstream demo``: segstream end to end on one machine, in a few minutes.

1. a local Kafka-protocol broker and Redis (``segstream dev`` machinery), unless
   ``KAFKA_BOOTSTRAP_SERVERS`` and ``REDIS_URL`` are both set;
2. a simulated customer population and a year of its history;
3. ``segstream offline fit`` (with the HTML report) and ``segstream offline publish``;
4. ``segstream consume`` in the background while live checkouts stream in, with a
   live view (events/s, segment sizes, recent segment changes, lag);
5. a few ``segstream lookup`` results and the adjusted Rand index of the online
   segments against the simulator's truth;
6. stops everything it started, also on Ctrl+C.

The demo checks its own results (every event consumed, nothing dead-lettered,
lookups answer, ARI above a floor) and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from state.config import Settings

ARI_FLOOR = 0.8  # online segments vs the simulator's archetypes (offline fit reaches >= 0.9)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run segstream end to end on local servers (simulate, fit, publish, stream)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=60.0, help="live streaming time (default 60)")
    p.add_argument("--customers", type=int, default=5_000, help="population size (default 5000)")
    p.add_argument("--rate", type=float, default=300.0, help="live checkouts/s (default 300)")
    p.add_argument("--history-days", type=float, default=365.0, help="history length (365)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output dir (out/demo)")
    p.set_defaults(func=run)


def say(text: str) -> None:
    print(text, flush=True)


def segstream(*args: str, env: dict[str, str]) -> None:
    """Run a segstream command as a user would, echoing it; raise on failure."""
    say(f"$ segstream {shlex.join(args)}")
    subprocess.run([sys.executable, "-m", "state.cli", *args], env=env, check=True)


def start_servers(stack: ExitStack) -> tuple[str, str]:
    """Bootstrap servers and Redis URL: from the environment, else local servers we own."""
    env_kafka, env_redis = os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), os.environ.get("REDIS_URL")
    if env_kafka and env_redis:
        say(f"using KAFKA_BOOTSTRAP_SERVERS={env_kafka} and the REDIS_URL from the environment")
        return env_kafka, env_redis
    from state.devstack import RedisServer, TansuBroker

    work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="segstream-demo-")))
    redis_server = RedisServer(workdir=work / "redis")
    broker = TansuBroker(workdir=work / "tansu")
    for server in (redis_server, broker):
        server.start()
        stack.callback(server.stop)
    say(f"local Redis on {redis_server.url} and Tansu broker on {broker.bootstrap} (pid-owned)")
    return broker.bootstrap, redis_server.url


def run(args: argparse.Namespace) -> int:
    from state.devstack import free_port

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    checks: list[tuple[str, bool]] = []
    with ExitStack() as stack:
        # Ctrl+C or SIGTERM anywhere: unwind the stack (stops consumer and servers).
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        kafka, redis_url = start_servers(stack)
        run_id = uuid.uuid4().hex[:8]
        settings = Settings.from_env(
            kafka_bootstrap_servers=kafka,
            redis_url=redis_url,
            events_topic=f"demo-{run_id}-checkout-events",
            dlq_topic=f"demo-{run_id}-checkout-events-dlq",
            changes_topic=f"demo-{run_id}-segment-changes",
            group_id=f"demo-{run_id}",
            metrics_port=free_port(),
        )
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "REDIS_URL": redis_url,
            "SEGSTREAM_EVENTS_TOPIC": settings.events_topic,
            "SEGSTREAM_DLQ_TOPIC": settings.dlq_topic,
            "SEGSTREAM_CHANGES_TOPIC": settings.changes_topic,
            "SEGSTREAM_GROUP_ID": settings.group_id,
            "SEGSTREAM_REDIS_PREFIX": settings.redis_prefix,
            "SEGSTREAM_METRICS_PORT": str(settings.metrics_port),
        }
        pop, truth_path = simulate(args, out)
        fit_dir = out / "fit"
        segstream("offline", "fit", "--transactions", str(out / "history.parquet"),
                  "--out", str(fit_dir), "--seed", str(args.seed), "--bootstrap", "3",
                  env=env)  # fmt: skip
        segstream("offline", "publish", str(fit_dir), env=env)
        consumer = start_consumer(stack, env)
        from producer.demo_stream import stream_live

        stats = stream_live(pop, settings, seconds=args.seconds, rate=args.rate, seed=args.seed)
        checks.append((f"all {stats.sent:,} events consumed", stats.consumed >= stats.sent > 0))
        checks.append(("nothing dead-lettered", stats.dead_lettered == 0))
        stop_consumer(consumer)
        checks.append(("consumer stopped cleanly (exit 0)", consumer.returncode == 0))
        checks.extend(summarise(pop, truth_path, settings, fit_dir, env))
    say("")
    for text, ok in checks:
        say(f"{'ok  ' if ok else 'FAIL'} {text}")
    failed = [t for t, ok in checks if not ok]
    say(
        "demo finished: "
        + ("all checks passed" if not failed else f"{len(failed)} check(s) failed")
    )
    return 1 if failed else 0


def simulate(args: argparse.Namespace, out: Path) -> tuple[Any, Path]:
    """A population whose history ends a minute ago, written for the offline job."""
    from producer.pacing import write_table
    from producer.simulate import make_population, simulate_history

    t0 = time.perf_counter()
    pop = make_population(
        args.customers, seed=args.seed, end=time.time() - 60, history_days=args.history_days
    )
    history = simulate_history(pop, seed=args.seed)
    write_table(history, out / "history.parquet")
    truth_path = out / "truth.csv"
    pop.truth().to_csv(truth_path, index=False)
    say(
        f"simulated {len(pop):,} customers and {len(history):,} past events "
        f"({args.history_days:.0f} days) in {time.perf_counter() - t0:.1f} s -> {out}"
    )
    return pop, truth_path


def start_consumer(stack: ExitStack, env: dict[str, str]) -> subprocess.Popen[bytes]:
    say("$ segstream consume   (in the background)")
    log = open(Path(env.get("SEGSTREAM_DEMO_LOG", os.devnull)), "wb")  # noqa: SIM115
    stack.callback(log.close)
    proc = subprocess.Popen(
        [sys.executable, "-m", "state.cli", "consume", "--session-timeout-ms", "6000"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    stack.callback(_kill_if_running, proc)
    return proc


def _kill_if_running(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def stop_consumer(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def summarise(
    pop: Any, truth_path: Path, settings: Settings, fit_dir: Path, env: dict[str, str]
) -> list[tuple[str, bool]]:
    """Lookups, ARI of the online segments against the truth, where things are."""
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    from state.lookup import SegmentClient

    truth = pd.read_csv(truth_path)
    sample = truth.groupby("archetype", sort=True).head(1)["customer_id"].tolist()
    say("")
    segstream("lookup", *sample, env=env)
    ids = truth["customer_id"].astype(str).tolist()
    with SegmentClient(settings.redis_url, prefix=settings.redis_prefix) as client:
        found: dict[str, Any] = {}
        for lo in range(0, len(ids), 1_000):
            found.update(client.get_many(ids[lo : lo + 1_000]))
    known = [c for c in ids if found.get(c) is not None]
    labels = [found[c].segment_id for c in known]
    ari = adjusted_rand_score(truth.set_index("customer_id").loc[known, "archetype"], labels)
    say("")
    say(f"adjusted Rand index, online segments vs simulator truth: {ari:.3f}")
    say(f"HTML report: {(fit_dir / 'report.html').resolve()}")
    say(f"metrics were served at http://127.0.0.1:{settings.metrics_port}/metrics")
    return [
        (
            f"{len(known):,} of {len(ids):,} customers have a segment in Redis",
            len(known) == len(ids),
        ),
        (f"ARI {ari:.3f} >= {ARI_FLOOR}", ari >= ARI_FLOOR),
        ("report written", (fit_dir / "report.html").exists()),
    ]
