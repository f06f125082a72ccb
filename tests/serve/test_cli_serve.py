"""`steer serve` as a user runs it: a real process on a free port that says where it listens,
enforces its API key, logs one JSON line per request, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading

import httpx


def test_steer_serve_listens_checks_its_key_logs_and_stops(recipe_file, tmp_path):
    log = tmp_path / "access.jsonl"
    env = dict(os.environ, STEER_API_KEY="sesame", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "steer.cli", "serve", str(recipe_file), "--port", "0"]
    server = subprocess.Popen(
        [*cmd, "--access-log", str(log)], stderr=subprocess.PIPE, text=True, env=env
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in server.stderr], daemon=True).start()
    try:
        port = None
        while port is None:
            line = lines.get(timeout=120)  # the server says where it listens once it does
            found = re.search(r"on http://127\.0\.0\.1:(\d+)/v1", line)
            port = int(found.group(1)) if found else None
        url = f"http://127.0.0.1:{port}/v1/completions"
        body = {"prompt": "Paris is", "max_tokens": 3}
        assert httpx.post(url, json=body).status_code == 401
        ok = httpx.post(url, json=body, headers={"authorization": "Bearer sesame"})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(30) == 130  # Ctrl-C's own exit status, after a clean shutdown
    rest = "".join(iter(lambda: lines.get(timeout=5) if not lines.empty() else "", ""))
    assert "Traceback" not in rest
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["status"] for r in records] == [401, 200]
    assert records[1]["completion_tokens"] == 3 and records[1]["path"] == "/v1/completions"
    assert "Paris" not in log.read_text()  # prompts are never logged
