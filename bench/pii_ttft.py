"""Time to first token added by PII protection, through real gateways.

    .venv/bin/python bench/pii_ttft.py [--requests 100] [--rounds 3]

Starts two gateways (`llmos serve`) in temporary state directories, each serving the echo model
(it streams back the last message word by word, at once, so time to first token is the
gateway's own work):
  protected  the defaults: Presidio, the default policy (input redaction with placeholders,
             restoration, the output decision and output redaction on the stream);
  baseline   `pii.detector: patterns`, a policy without redaction and no output decision.
Each request is a new chat message holding a name, an e-mail and a phone number (a counter
makes every text new, so the detector's cache never hits: the worst case). Streamed over
HTTP/1.1; the time to first token is measured to the first SSE chunk with content. Rounds
alternate the gateways. Prints p50/p95 per gateway and the difference.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
LLMOS = str(Path(sys.executable).with_name("llmos"))
NAMES = ["Katherine Johnson", "Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    root: Path, name: str, extra: str, policies: Path | None
) -> tuple[subprocess.Popen[bytes], str, str]:
    home = root / name
    home.mkdir()
    port = free_port()
    policy = (
        f"policy: {{dir: {policies}, output_query: null, run_tests_on_load: false}}\n" if policies else ""
    )
    config = home / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\n{extra}{policy}"
        "models:\n  - {name: echo, kind: echo}\n"
    )
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen([LLMOS, "serve", "--config", str(config)], stdout=subprocess.PIPE, stderr=log)
    assert proc.stdout is not None
    key = proc.stdout.readline().decode().strip()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url, key
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not start: {(home / 'server.log').read_text()[-2000:]}")


def ttft_ms(client: httpx.Client, key: str, text: str) -> float:
    body = {
        "model": "echo",
        "stream": True,
        "max_tokens": 200,
        "messages": [{"role": "user", "content": text}],
    }
    t0 = time.perf_counter()
    first: float | None = None
    with client.stream(
        "POST", "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    ) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if first is None and line.startswith("data: {"):
                choices = json.loads(line[6:])["choices"]
                if choices and choices[0]["delta"].get("content"):
                    first = (time.perf_counter() - t0) * 1000
    assert first is not None
    return first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmos-ttft-") as tmp:
        root = Path(tmp)
        plain = root / "plain-policies"
        shutil.copytree(ROOT / "policies", plain, ignore=shutil.ignore_patterns("__*", "*_test.rego"))
        data = json.loads((plain / "data.json").read_text())
        data["llmos"]["config"].pop("input_redact")
        (plain / "data.json").write_text(json.dumps(data))
        gateways = {
            "protected": start(root, "protected", "", None),
            "baseline": start(root, "baseline", "pii: {detector: patterns}\n", plain),
        }
        try:
            samples: dict[str, list[float]] = {name: [] for name in gateways}
            n = 0
            clients = {name: httpx.Client(base_url=url, timeout=60) for name, (_, url, _) in gateways.items()}
            for name, (_, _, key) in gateways.items():  # warm up
                for _ in range(5):
                    ttft_ms(clients[name], key, "warm up, Alice Smith")
            for _ in range(args.rounds):
                for name, (_, _, key) in gateways.items():
                    for _ in range(args.requests):
                        n += 1
                        who = NAMES[n % len(NAMES)]
                        text = (
                            f"Request {n}: please ask {who} to write to "
                            f"{who.split()[0].lower()}{n}@example.com "
                            f"or call +1 415 555 {n % 10000:04d} about the invoice."
                        )
                        samples[name].append(ttft_ms(clients[name], key, text))
            for c in clients.values():
                c.close()
        finally:
            for proc, _, _ in gateways.values():
                proc.terminate()
                proc.wait(timeout=30)
    print(f"time to first token, streamed chat, echo model ({args.requests} x {args.rounds} requests each)")
    print(f"{'gateway':<12}{'p50 ms':>9}{'p95 ms':>9}")
    p50 = {}
    for name, ms in samples.items():
        ms.sort()
        p50[name] = statistics.median(ms)
        print(f"{name:<12}{p50[name]:>9.2f}{ms[int(0.95 * (len(ms) - 1))]:>9.2f}")
    print(f"added by PII protection at p50: {p50['protected'] - p50['baseline']:.2f} ms")


if __name__ == "__main__":
    main()
