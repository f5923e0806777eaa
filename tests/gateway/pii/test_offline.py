"""Building the engine and analysing e-mails and URLs connects nowhere and resolves no name.

Runs in a fresh interpreter (nothing imported or cached yet, a private HOME and cache dir so no
public suffix list is already on disk) with an audit hook that records every socket event.
The one socket allowed is urllib3's import-time IPv6 probe (``urllib3.util.connection``
creates an AF_INET6 socket and binds it to ``::1``; it never connects), which any process
importing ``requests`` makes; tldextract imports it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys

events = []

def hook(event, args):
    if event.startswith("socket."):
        if event in ("socket.bind", "socket.connect"):
            address = args[1]
        elif event == "socket.__new__":
            address = args[1:3]  # (family, type)
        else:
            address = args[:2]
        events.append([event, repr(address)[:200]])

sys.addaudithook(hook)

from gateway.pii.config import PiiConfig
from gateway.pii.engine import PiiEngine

engine = PiiEngine(PiiConfig())
engine.warm()
texts = [
    "Mail john.doe@example.com or jane@mail.example.co.uk, see https://www.example.org/x",
    "Contact ops@corp.internal and visit http://intranet.local/wiki or www.python.org.",
    "Write to j\u200bohn@exa\u200bmple.com, admin@xn--80ak6aa92e.com and user@例子.广告",
]
results = [engine.find(t) for t in texts] + engine.find_many([t + " again" for t in texts])
found = sum(1 for r in results for d in r if d.type == "EMAIL_ADDRESS")
import tldextract
tld = tldextract.extract("someone@sub.example.co.uk").suffix  # the process-wide default, too
during = list(events)

import socket
socket.getaddrinfo("127.0.0.1", 9)  # control: the hook does see socket activity
print(json.dumps({"during": during, "after": events[len(during):], "emails": found, "tld": tld}))
"""


def test_no_network_while_building_and_analysing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLDEXTRACT")}
    env.update(
        HOME=str(tmp_path),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        TLDEXTRACT_CACHE=str(tmp_path / "tldextract"),
        PYTHONPATH=str(Path(__file__).resolve().parents[3]),
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=180, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    loopback_probe = [["socket.__new__", "(10, 1)"], ["socket.bind", "('::1', 0)"]]
    assert [e for e in report["during"] if e not in loopback_probe] == []
    assert [e[0] for e in report["after"]] == ["socket.getaddrinfo"]
    assert report["emails"] >= 8
    assert report["tld"] == "co.uk"
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "tldextract").exists()
