"""Load test of ``steer serve`` on the bundled model: N clients for a fixed time against a
loopback server (a real ``steer serve`` process), with and without steering, side by side with
the same requests served one at a time by plain transformers ``generate``.

Arms (their order alternates over ``--rounds`` so drift hits them alike):
  plain       N clients, no steering
  steered     N clients, each clamping a different SAE feature at layer 12 on every token
  sequential  the same requests one at a time with plain ``generate`` (no server, no batching)
  staggered   a long request, and a short one sent while it generates: which finishes first

Prints requests/s, tokens/s, p50/p99 latency and failed requests per arm, the server's RSS at
start and end, and the ratios steered/plain and steered/sequential. Run it alone on the
machine: another process on the cores makes every number meaningless.

    python bench/serve_load.py [--clients 8] [--seconds 20] [--max-tokens 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from generation import PROMPTS  # the generation benchmark's prompts

# Eight different features, one per client: the clamps differ, so no two rows share an edit.
FEATURES = [101, 977, 1503, 2222, 3030, 4096, 5555, 7007]
RECIPE = """model: smollm2-135m-instruct
saes:
  - {id: res12, builtin: smollm2-135m-res12-topk}
generation: {max_new_tokens: 32, temperature: 0}
prompts: ["unused"]
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(recipe: Path, port: int, max_batch: int, log: Path, threads: int | None):
    cmd = [sys.executable, "-m", "steer.cli", "serve", str(recipe), "--port", str(port)]
    cmd += ["--max-batch", str(max_batch), "--access-log", os.devnull]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    # stderr to a file, not a pipe: a pipe nobody reads fills up and blocks the server
    with log.open("w") as err:
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("the server did not start in 300 s")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def body(i: int, max_tokens: int, steered: bool) -> dict:
    request = {
        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        "max_tokens": max_tokens,
        "min_tokens": max_tokens,  # every completion the same length, in every arm
        "temperature": 0,
    }
    if steered:
        clamp = {"plugin": "clamp", "sae": "res12", "features": [FEATURES[i % 8]], "value": 8.0}
        request["steer"] = {"interventions": [clamp]}
    return request


def load(url: str, clients: int, seconds: float, max_tokens: int, steered: bool) -> dict:
    """``clients`` threads sending requests back to back for ``seconds``."""
    stop_at = time.monotonic() + seconds
    latencies, tokens, failed = [], [], [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(timeout=300) as http:
            n = 0
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                try:
                    r = http.post(url, json=body(k + clients * n, max_tokens, steered))
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    if ok:
                        latencies.append(time.perf_counter() - t0)
                        tokens.append(r.json()["usage"]["completion_tokens"])
                    else:
                        failed[0] += 1
                n += 1

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return summary(latencies, tokens, failed[0], time.perf_counter() - t0)


def summary(latencies: list[float], tokens: list[int], failed: int, wall: float) -> dict:
    ordered = sorted(latencies) or [float("nan")]
    return {
        "requests": len(latencies),
        "tokens": sum(tokens),
        "wall_s": wall,
        "req_per_s": len(latencies) / wall,
        "tok_per_s": sum(tokens) / wall,
        "p50_s": statistics.median(ordered),
        "p99_s": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "failed": failed,
    }


def merge(parts: list[dict]) -> dict:
    lat = [p["p50_s"] for p in parts]
    wall = sum(p["wall_s"] for p in parts)
    out = {k: sum(p[k] for p in parts) for k in ("requests", "tokens", "failed")}
    out.update(wall_s=wall, req_per_s=out["requests"] / wall, tok_per_s=out["tokens"] / wall)
    out.update(p50_s=statistics.median(lat), p99_s=max(p["p99_s"] for p in parts))
    return out


class Sequential:
    """The same requests, one at a time, through plain transformers ``generate`` (the model
    loaded in this process; the server sits idle meanwhile)."""

    def __init__(self):
        from steer.model import load_model
        from steer.steering.generation import eos_ids

        self.model = load_model(device="cpu")
        self.eos = eos_ids(self.model)

    def run(self, seconds: float, max_tokens: int) -> dict:
        import torch

        from steer.steering.generation import length_until_eos

        model, latencies, tokens = self.model, [], []
        stop_at, t0, i = time.monotonic() + seconds, time.perf_counter(), 0
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            enc = model.tokenize([PROMPTS[i % len(PROMPTS)]], chat=True)
            with torch.inference_mode():
                ids = model.hf.generate(
                    **enc,
                    max_new_tokens=max_tokens,
                    min_new_tokens=max_tokens,
                    do_sample=False,
                    pad_token_id=model.tokenizer.pad_token_id,
                )
            tokens.append(length_until_eos(ids[0, enc["input_ids"].shape[1] :].tolist(), self.eos))
            latencies.append(time.perf_counter() - start)
            i += 1
        return summary(latencies, tokens, 0, time.perf_counter() - t0)


def staggered(url: str, long_tokens: int, short_tokens: int) -> dict:
    """A long request; 1 s later a short one. Iteration-level batching lets it finish first."""
    done: dict[str, float] = {}

    def send(name: str, tokens: int) -> None:
        httpx.post(url, json=body(0, tokens, False), timeout=300).raise_for_status()
        done[name] = time.perf_counter()

    t0 = time.perf_counter()
    long = threading.Thread(target=send, args=("long", long_tokens))
    long.start()
    time.sleep(1.0)
    send("short", short_tokens)
    long.join()
    return {
        "long_done_s": done["long"] - t0,
        "short_done_s": done["short"] - t0,
        "short_first": done["short"] < done["long"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="per arm and round")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads for the server and the sequential arm (default: torch's own); 1 "
        "keeps the comparison fair when other jobs share the cores",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    sequential = Sequential()
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "serve.yaml"
        recipe.write_text(RECIPE)
        port = free_port()
        log = Path(tmp) / "server.log"
        server = start_server(recipe, port, max(16, args.clients), log, args.threads)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        try:
            load(url, args.clients, 3.0, args.max_tokens, True)  # warm-up: first traces, caches
            sequential.run(2.0, args.max_tokens)
            rss_start = rss_mib(server.pid)
            arms: dict[str, list[dict]] = {"plain": [], "steered": [], "sequential": []}
            for r in range(args.rounds):
                order = ("plain", "steered", "sequential")
                for arm in order if r % 2 == 0 else order[::-1]:
                    print(
                        f"round {r + 1}/{args.rounds}: {arm} ({args.seconds:.0f} s)",
                        file=sys.stderr,
                    )
                    if arm == "sequential":
                        arms[arm].append(sequential.run(args.seconds, args.max_tokens))
                    else:
                        steered = arm == "steered"
                        arms[arm].append(
                            load(url, args.clients, args.seconds, args.max_tokens, steered)
                        )
            print("staggered arrivals", file=sys.stderr)
            stagger = staggered(url, long_tokens=4 * args.max_tokens, short_tokens=8)
            rss_end = rss_mib(server.pid)
        finally:
            stop_server(server)
            log_tail = (Path(tmp) / "server.log").read_text()[-2000:]
    if log_tail.strip():
        print(f"server stderr (end):\n{log_tail}", file=sys.stderr)
    results = {name: merge(parts) for name, parts in arms.items()}
    report(results, stagger, rss_start, rss_end, args)


def report(results: dict, stagger: dict, rss_start: float, rss_end: float, args) -> None:
    threads = args.threads or "default"
    print(
        f"\n{args.clients} clients, {args.max_tokens} tokens each, greedy, SmolLM2-135M on CPU, torch threads: {threads}"
    )
    print(
        f"{'arm':<11} {'req/s':>7} {'tok/s':>8} {'p50 s':>7} {'p99 s':>7} {'requests':>9} {'failed':>7}"
    )
    for name, r in results.items():
        print(
            f"{name:<11} {r['req_per_s']:7.2f} {r['tok_per_s']:8.1f} {r['p50_s']:7.2f} "
            f"{r['p99_s']:7.2f} {r['requests']:9d} {r['failed']:7d}"
        )
    steered, plain, seq = (results[k]["tok_per_s"] for k in ("steered", "plain", "sequential"))
    print(f"\nsteered / plain server tok/s:      {steered / plain:.2f}x  (target >= 0.85)")
    print(f"steered server / sequential tok/s: {steered / seq:.2f}x  (target >= 3)")
    print(
        f"staggered: long done at {stagger['long_done_s']:.2f} s, short at {stagger['short_done_s']:.2f} s "
        f"({'short first' if stagger['short_first'] else 'LONG FIRST'})"
    )
    print(f"server RSS: {rss_start:.0f} MiB after warm-up, {rss_end:.0f} MiB at the end")
    if args.json:
        payload = {
            "results": results,
            "staggered": stagger,
            "rss_mib": [rss_start, rss_end],
            "args": vars(args),
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))


if __name__ == "__main__":
    main()
