"""Replication throughput against real Orthanc 1.10.1 servers, side by side.

    python bench/replicate.py [--count 2000] [--big] [--workers 1,2,4,8]
    python bench/replicate.py --focus [--repeat 5] [--baseline DIR]

`--focus` runs only what issue 14 judges, interleaved round by round: the
ceiling (POST from disk x8), `replicate`, `import-storage` plain and
compressed (with the index), and, with `--baseline DIR` (an older checkout of
this repository, e.g. `git worktree add DIR <commit>`), the same tool rows run
from that checkout. Each round measures every row into a fresh target; the
figures are medians and ranges over the rounds, and each row's ratio is taken
to the ceiling measured in the same round (then the median of those ratios).

Rounds, each into a fresh target (created, measured, stopped, deleted):
- ceiling: parallel POSTs of the same files read from disk (urllib3), best concurrency;
- sample: the samples' algorithm (Replicate.py): list studies, then one instance at a
  time, GET /file with requests' default Accept-Encoding (gzip), POST;
- requests x8: a plain 8-thread copier with requests (identity encoding);
- peer job: the source pushes with /peers/{id}/store (Orthanc's own sender);
- orchestrator replicate at each --workers (the CLI as a child process);
- orchestrator import-storage from the plain and the compressed storage folder.
Per round: instances/s (from the tool's own elapsed time for the CLI rounds, so
interpreter start-up is excluded; wall time is printed too), the ratio to the
ceiling, CPU-ms per instance of source, target and client, and the client's
peak RSS. `--big` adds a memory round: 2,000 vs 20,000 small (32x32) instances.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests
import urllib3

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness.dicom import make_dataset, write_files  # noqa: E402
from tests.harness.orthanc import OrthancServer  # noqa: E402


@dataclass
class Row:
    name: str
    count: int
    seconds: float
    source_ms: float | None = None
    target_ms: float | None = None
    client_ms: float | None = None
    rss_mb: float | None = None
    wall: float | None = None

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def cpu(server: OrthancServer | None) -> float:
    if server is None or server.proc is None:
        return 0.0
    t = psutil.Process(server.proc.pid).cpu_times()
    return t.user + t.system


class Bench:
    def __init__(self, root: Path, count: int, rows: int):
        self.root = root
        self.count = count
        self.rows = rows
        self.n = 0

    def server(self, name: str, **overrides) -> OrthancServer:
        self.n += 1
        return OrthancServer(self.root / f"{self.n:02d}-{name}", config_overrides=overrides).start()

    def drop(self, server: OrthancServer) -> None:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)

    def measure(self, name: str, fn, source: OrthancServer | None, target: OrthancServer,
                count: int) -> Row:
        c0 = (cpu(source), cpu(target), _self_cpu())
        t0 = time.perf_counter()
        extra = fn() or {}
        seconds = time.perf_counter() - t0
        c1 = (cpu(source), cpu(target), _self_cpu())
        got = target.statistics()["CountInstances"]
        if got != count:
            raise SystemExit(f"{name}: the target holds {got} instances, expected {count}")
        client = extra.get("client_cpu", c1[2] - c0[2])
        return Row(name, count, extra.get("seconds", seconds),
                   1000 * (c1[0] - c0[0]) / count if source else None,
                   1000 * (c1[1] - c0[1]) / count, 1000 * client / count,
                   extra.get("rss_mb"), seconds)


def _self_cpu() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def post_files(url: str, paths: list[Path], workers: int) -> None:
    parts = urllib3.util.parse_url(url)
    pool = urllib3.HTTPConnectionPool(parts.host, parts.port, maxsize=workers, block=True)

    def post(path: Path) -> None:
        r = pool.request("POST", "/instances", body=path.read_bytes(),
                         headers={"Content-Type": "application/dicom"})
        if r.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {r.status}")
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(post, paths))
    pool.close()


def post_files_requests(url: str, paths: list[Path], workers: int) -> None:
    local = threading.local()

    def post(path: Path) -> None:
        if not hasattr(local, "s"):
            local.s = requests.Session()
        local.s.post(f"{url}/instances", data=path.read_bytes()).raise_for_status()
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(post, paths))


def sample_copier(src: str, dst: str) -> None:
    """Replicate.py's algorithm: all studies listed first, then one instance at a time."""
    s = requests.Session()  # Accept-Encoding: gzip, deflate (requests' default)
    for study in s.get(f"{src}/studies").json():
        for inst in s.get(f"{src}/studies/{study}/instances").json():
            data = s.get(f"{src}/instances/{inst['ID']}/file").content
            s.post(f"{dst}/instances", data=data).raise_for_status()


def threaded_requests_copier(src: str, dst: str, workers: int = 8) -> None:
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "s"):
            local.s = requests.Session()
            local.s.headers["Accept-Encoding"] = "identity"
        return local.s

    def copy(iid: str) -> None:
        data = session().get(f"{src}/instances/{iid}/file").content
        session().post(f"{dst}/instances", data=data).raise_for_status()
    ids = requests.get(f"{src}/instances").json()
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(copy, ids))


def peer_job(source: OrthancServer, target: OrthancServer) -> None:
    requests.put(f"{source.url}/peers/bench", json={"Url": target.url + "/"}).raise_for_status()
    patients = requests.get(f"{source.url}/patients").json()
    job = requests.post(f"{source.url}/peers/bench/store",
                        json={"Resources": patients, "Asynchronous": True}).json()["ID"]
    while True:
        state = requests.get(f"{source.url}/jobs/{job}").json()["State"]
        if state in ("Success", "Failure"):
            break
        time.sleep(0.02)
    if state != "Success":
        raise RuntimeError("peer job failed")


def run_tool(*args: str, code: Path | None = None) -> dict:
    """Run the CLI as a child; return its JSON plus wall time, CPU and peak RSS (wait4).

    `code`: the checkout whose `orchestrator` package runs (default: this one)."""
    state = tempfile.mkdtemp(prefix="state-", dir=os.environ.get("BENCH_ROOT"))
    argv = [sys.executable, "-m", "orchestrator", *args, "--state-dir", state, "--json"]
    env = dict(os.environ, PYTHONPATH=str(code or REPO))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                cwd=str(code or REPO), env=env)
        peak = [0]
        watcher = threading.Thread(target=_watch_hwm, args=(proc.pid, peak), daemon=True)
        watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU
        watcher.join()
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text, errors = out.read().decode(), err.read().decode()
    shutil.rmtree(state, ignore_errors=True)
    try:
        data = json.loads(text)
    except ValueError:
        raise SystemExit(f"{args[0]} printed no JSON: {errors[-800:]}") from None
    if not data.get("ok"):
        raise SystemExit(f"{args[0]} failed: {errors[-500:]} {text[-800:]}")
    # ru_maxrss would start from this (big) process's RSS at fork: read VmHWM instead.
    data.update(wall=wall, client_cpu=usage.ru_utime + usage.ru_stime, rss_mb=peak[0] / 1024)
    return data


def _watch_hwm(pid: int, peak: list[int]) -> None:
    """Poll the child's VmHWM (peak RSS of its own address space, kB) until it exits."""
    path = f"/proc/{pid}/status"
    while True:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            return
        if "VmHWM" not in text:  # a zombie: exited
            return
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                peak[0] = max(peak[0], int(line.split()[1]))
        time.sleep(0.02)


def tool_round(bench: Bench, name: str, args_fn, source, count: int, code: Path | None = None,
               **overrides) -> Row:
    target = bench.server("target", **overrides)
    result: dict = {}

    def go():
        result.update(run_tool(*args_fn(target), code=code))
        return {"seconds": result["seconds"], "client_cpu": result["client_cpu"],
                "rss_mb": result["rss_mb"]}
    row = bench.measure(name, go, source, target, count)
    row.wall = result["wall"]
    bench.drop(target)
    return row


def print_table(rows: list[Row], ceiling: float) -> None:
    head = (f"{'round':34s} {'inst':>6s} {'s':>7s} {'inst/s':>7s} {'ceil%':>6s} "
            f"{'src ms':>7s} {'tgt ms':>7s} {'cli ms':>7s} {'RSS MB':>7s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        def f(v, fmt="7.2f"):
            return format(v, fmt) if v is not None else " " * int(fmt.split(".")[0])
        print(f"{r.name:34s} {r.count:6d} {r.seconds:7.2f} {r.rate:7.0f} "
              f"{100 * r.rate / ceiling:5.0f}% {f(r.source_ms)} {f(r.target_ms)} "
              f"{f(r.client_ms)} {f(r.rss_mb, '7.1f')}")


def median(rounds: list[Row]) -> Row:
    """The round with the median rate (its own CPU and RSS figures kept)."""
    return sorted(rounds, key=lambda r: r.rate)[len(rounds) // 2]


def startup_cpu(code: Path | None) -> float:
    """CPU-ms of the CLI's start-up alone (interpreter, imports, --help): it is inside every
    tool row's client figure; spread over the instances it is start-up / count."""
    env = dict(os.environ, PYTHONPATH=str(code or REPO))
    best = float("inf")
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "replicate", "--help"],
                                stdout=subprocess.DEVNULL, env=env, cwd=str(code or REPO))
        _, _, usage = os.wait4(proc.pid, 0)
        best = min(best, 1000 * (usage.ru_utime + usage.ru_stime))
    return best


def spread(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{statistics.median(ordered):6.2f} [{ordered[0]:.2f}-{ordered[-1]:.2f}]"


def focus(args, root: Path, bench: Bench) -> None:
    """The issue-14 figures: ratios to the ceiling of the same round, medians and ranges."""
    n = args.count
    print(f"making {n} instances (~130 KB each) in {root}, {os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.1f} ...", flush=True)
    paths = write_files(root / "files", make_dataset(n))
    servers = []
    try:
        live = bench.server("source-live")
        servers.append(live)
        post_files(live.url, paths, 8)
        stopped = {}
        for kind, overrides in (("plain", {}), ("compressed", {"StorageCompression": True})):
            server = bench.server(f"source-{kind}", **overrides)
            post_files(server.url, paths, 8)
            server.stop()
            stopped[kind] = server
        codes = [("", None)] + ([(" (baseline)", args.baseline)] if args.baseline else [])
        rows = {"ceiling: POST from disk x8": lambda: ceiling_round(bench, paths, n)}
        for label, code in codes:
            rows[f"replicate{label}"] = lambda code=code, label=label: tool_round(
                bench, f"replicate{label}", lambda t: ("replicate", live.url, t.url), live, n,
                code=code)
            for kind, server in stopped.items():
                name = f"import-storage {kind}{label}"
                rows[name] = lambda code=code, name=name, server=server: tool_round(
                    bench, name, lambda t: ("import-storage", str(server.storage), t.url),
                    None, n, code=code)
        results: dict[str, list[Row]] = {name: [] for name in rows}
        ratios: dict[str, list[float]] = {name: [] for name in rows}
        for r in range(args.repeat):
            print(f"round {r + 1}/{args.repeat}", flush=True)
            order = list(rows.items())
            for name, one in order:
                results[name].append(one())
            ceiling = results["ceiling: POST from disk x8"][-1].rate
            for name in rows:
                ratios[name].append(results[name][-1].rate / ceiling)
            print("  " + "; ".join(f"{name} {results[name][-1].rate:.0f}/s "
                                   f"({ratios[name][-1]:.2f}x)" for name in rows)
                  + f"; load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"\n{n} instances, {args.repeat} interleaved rounds, fresh target per row; "
              "median [min-max]")
        print(f"{'row':30s} {'inst/s':>22s} {'x ceiling':>22s} {'client CPU-ms/inst':>22s} "
              f"{'target CPU-ms/inst':>22s} {'client peak RSS MB':>22s}")
        for name, rounds in results.items():
            client = [r.client_ms for r in rounds if r.client_ms is not None]
            rss = [r.rss_mb for r in rounds if r.rss_mb is not None]
            print(f"{name:30s} {spread([r.rate for r in rounds]):>22s} "
                  f"{spread(ratios[name]):>22s} {spread(client) if client else '':>22s} "
                  f"{spread([r.target_ms for r in rounds]):>22s} {spread(rss) if rss else '':>22s}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
        for label, code in codes:
            print(f"CLI start-up{label}: {startup_cpu(code):.0f} CPU-ms (inside each tool row's "
                  f"client figure: {startup_cpu(code) / n:.3f} ms per instance here)")
    finally:
        for server in servers:
            server.stop()


def memory_round(bench: Bench, root: Path) -> None:
    """Peak RSS of `replicate` at 2,000 and 20,000 small instances: flat, or not."""
    print("\nmemory: peak RSS of `orchestrator replicate`, small (32x32) instances")
    for n in (2000, 20000):
        small = bench.server(f"source-{n}")
        post_files(small.url, write_files(root / f"small-{n}",
                                          make_dataset(n, rows=32, cols=32)), 8)
        row = tool_round(bench, f"replicate {n} small", lambda t, s=small: (
            "replicate", s.url, t.url), small, n)
        bench.drop(small)
        shutil.rmtree(root / f"small-{n}", ignore_errors=True)
        print(f"  {n:6d} instances: {row.rate:.0f} inst/s, peak RSS "
              f"{row.rss_mb:.1f} MB, client {row.client_ms:.2f} CPU-ms/inst", flush=True)


def ceiling_round(bench: Bench, paths: list[Path], n: int) -> Row:
    target = bench.server("target")
    try:
        return bench.measure("ceiling: POST from disk x8", lambda: post_files(target.url, paths, 8),
                             None, target, n)
    finally:
        bench.drop(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--workers", default="2,4,8,16")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per row (median)")
    parser.add_argument("--big", action="store_true", help="add the 2,000 vs 20,000 RSS round")
    parser.add_argument("--skip-slow", action="store_true", help="skip the sequential sample")
    parser.add_argument("--focus", action="store_true",
                        help="only the ceiling, replicate and import-storage (see above)")
    parser.add_argument("--baseline", type=Path, help="with --focus: an older checkout to "
                        "run the same tool rows from")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="orchestrator-bench-"))
    os.environ["BENCH_ROOT"] = str(root)
    bench = Bench(root, args.count, 256)
    if args.focus:
        try:
            if args.repeat:
                focus(args, root, bench)
            if args.big:
                memory_round(bench, root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    servers: list[OrthancServer] = []
    rows: list[Row] = []

    rounds: list = []  # (name, one round -> Row), run interleaved `repeat` times

    def repeat(name: str, one) -> None:
        rounds.append((name, one))

    def fresh(name, fn, source=None) -> Row:
        target = bench.server("target")
        try:
            return bench.measure(name, lambda: fn(target), source, target, args.count)
        finally:
            bench.drop(target)

    try:
        print(f"making {args.count} instances (~130 KB each) in {root} ...", flush=True)
        paths = write_files(root / "files", make_dataset(args.count))
        plain = bench.server("source-plain")
        servers.append(plain)
        post_files(plain.url, paths, 8)
        zsrc = bench.server("source-zlib", StorageCompression=True)
        servers.append(zsrc)
        post_files(zsrc.url, paths, 8)
        for w in (4, 8, 16):
            repeat(f"ceiling: POST from disk x{w}", lambda w=w: fresh(
                f"ceiling: POST from disk x{w}", lambda t: post_files(t.url, paths, w)))
        repeat("ceiling: requests POST x8", lambda: fresh(
            "ceiling: requests POST x8", lambda t: post_files_requests(t.url, paths, 8)))
        repeat("requests x8, identity", lambda: fresh(
            "requests x8, identity", lambda t: threaded_requests_copier(plain.url, t.url), plain))
        repeat("peer job (/peers/store)", lambda: fresh(
            "peer job (/peers/store)", lambda t: peer_job(plain, t), plain))
        for workers in [int(w) for w in args.workers.split(",")]:
            name = f"orchestrator replicate w={workers}"
            repeat(name, lambda w=workers, n=name: tool_round(
                bench, n, lambda t: ("replicate", plain.url, t.url, "--workers", str(w)),
                plain, args.count))
        repeat("orchestrator replicate --verify", lambda: tool_round(
            bench, "orchestrator replicate --verify",
            lambda t: ("replicate", plain.url, t.url, "--verify"), plain, args.count))
        results: dict[str, list[Row]] = {}
        for n in range(args.repeat):  # interleaved: background load hits every row alike
            print(f"round {n + 1}/{args.repeat}", flush=True)
            for name, one in rounds:
                results.setdefault(name, []).append(one())
        if not args.skip_slow:
            rows.append(fresh("sample: sequential, gzip (1 round)",
                              lambda t: sample_copier(plain.url, t.url), plain))
        rounds.clear()
        for server in (plain, zsrc):
            server.stop()
        for workers in (4, 8):
            for kind, server in (("plain", plain), ("compressed", zsrc)):
                name = f"import-storage {kind} w={workers}"
                repeat(name, lambda s=server, n=name, w=workers: tool_round(
                    bench, n, lambda t: ("import-storage", str(s.storage), t.url, "--workers",
                                         str(w)), None, args.count))
        repeat("import-storage compressed --no-index", lambda: tool_round(
            bench, "import-storage compressed --no-index",
            lambda t: ("import-storage", str(zsrc.storage), t.url, "--no-index"), None,
            args.count))
        repeat("ceiling (again): POST from disk x8", lambda: fresh(
            "ceiling (again): POST from disk x8", lambda t: post_files(t.url, paths, 8)))
        for n in range(args.repeat):
            print(f"import round {n + 1}/{args.repeat}", flush=True)
            for name, one in rounds:
                results.setdefault(name, []).append(one())
        rows[:0] = [median(r) for r in results.values()]
        best = max((r for r in rows if r.name.startswith("ceiling: POST")), key=lambda r: r.rate)
        print()
        print(f"median of {args.repeat} rounds; ceiling = best POST-from-disk row "
              f"({best.rate:.0f} inst/s)")
        print_table(rows, best.rate)
        if args.big:
            memory_round(bench, root)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
