"""The operator console in headless Chromium (Debian's, through Playwright): log in with an
auditor key, find a request in the audit explorer, see its inclusion proof verified in the
browser, open its explanation and its attribution heatmap, and the live status. Screenshots
are saved as test artifacts (``$LLMOS_TEST_ARTIFACTS``, default ``test-artifacts/``)."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway, explaining_policies, free_port, serve_config, wait_record
from tests.gateway.oidc.idp import LocalIdp

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed"),
]

ARTIFACTS = Path(
    os.environ.get("LLMOS_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def idp() -> Iterator[LocalIdp]:
    server = LocalIdp().start()
    server.register_client("llmos-console")  # a public client: the browser signs in with PKCE
    server.login_as = {"sub": "ann", "tenant": "acme", "roles": ["llm-auditors"]}
    yield server
    server.stop()


@pytest.fixture(scope="module")
def explained(tmp_path_factory: pytest.TempPathFactory, idp: LocalIdp) -> Iterator[tuple[Gateway, str, str]]:
    """A gateway whose policy asks for explanations, one attributed request, an auditor key;
    its console signs in at a local OpenID provider too."""
    root = tmp_path_factory.mktemp("console")
    explaining_policies(root)
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\npolicy: {{dir: policies, run_tests_on_load: false}}\n"
        "pii: {detector: patterns}\nmodels:\n  - {name: demo, path: state/models/demo, threads: 1}\n"
        f"oidc:\n  issuers:\n    - {{issuer: '{idp.issuer}', audiences: [llmos], role_map: {{llm-auditors: auditor}}}}\n"
        f"console:\n  oidc: {{issuer: '{idp.issuer}', client_id: llmos-console}}\n"
        "audit: {sealed_fields: [tenant]}\n"
    )
    with serve_config(config, port, root / "state") as gw:
        user = gw.create_key("console-user", "user")
        r = httpx.post(
            gw.base_url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {user}"},
            json={
                "model": "demo",
                "messages": [{"role": "user", "content": "Mail alice@example.com the quarterly report"}],
                "max_tokens": 6,
            },
            timeout=120,
        )
        assert r.status_code == 200, r.text
        request_id = r.headers["x-request-id"]
        record = wait_record(gw, request_id)  # the attribution is computed after the answer
        assert record["record"]["model_attribution"]["status"] == "ok", record
        yield gw, request_id, gw.create_key("console-auditor", "auditor")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_an_auditor_finds_a_request_and_opens_its_attribution_heatmap(
    explained: tuple[Gateway, str, str], browser: Any
) -> None:
    gw, request_id, auditor = explained
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Script errors and CSP violations; not "Failed to load resource" (the 403 the status view
    # expects for an auditor, a favicon request).
    page.on(
        "console",
        lambda m: (
            errors.append(m.text) if m.type == "error" and "Failed to load resource" not in m.text else None
        ),
    )
    try:
        page.goto(gw.base_url + "/console")
        page.fill("#login-key", auditor)
        page.click("#login-form button")

        # The audit explorer: filter by model and decision, find the request.
        page.wait_for_selector("#search-form")
        page.fill("#search-form input[name=model]", "demo")
        page.select_option("#search-form select[name=decision]", "allow")
        page.click("#search-form button")
        # The table first shows the unfiltered newest entries: wait for the filtered answer
        # (every row the model's; times out, failing the test, if the filter never applies).
        page.wait_for_function(
            "() => { const rows = [...document.querySelectorAll('#results tbody tr')];"
            " return rows.length > 0 && rows.every(r => r.innerText.includes('demo')); }"
        )
        row = page.locator(f"#results tr[data-request-id='{request_id}']")
        row.wait_for()
        assert "allow" in row.inner_text()
        assert all("demo" in r.inner_text() for r in page.locator("#results tbody tr").all())  # filtered
        page.screenshot(path=str(ARTIFACTS / "console-audit.png"), full_page=True)

        # The entry: its inclusion proof and checkpoint signature verified in the browser.
        row.click()
        page.wait_for_selector("#proof[data-verified]")
        proof = page.inner_text("#proof")
        assert page.get_attribute("#proof", "data-verified") == "true", proof
        assert "Verified in this browser" in proof and "signature verified" in proof
        fields = page.inner_text("#entry-fields")
        assert "policy_digest" in fields and "model_digest" in fields and request_id not in proof
        assert "acme" in fields and re.search(r"sealed\s+tenant", fields)  # a sealed field, opened
        page.screenshot(path=str(ARTIFACTS / "console-entry.png"), full_page=True)

        # The explanation: the heatmap of prompt tokens, the rules, the PII findings by type.
        page.click("#explain-link")
        page.wait_for_selector("#heatmap span")
        tokens = page.query_selector_all("#heatmap span")
        assert len(tokens) > 3
        scores = [float(t.get_attribute("data-score") or "nan") for t in tokens]
        assert any(s != 0 for s in scores)
        assert "EMAIL_ADDRESS" in page.inner_text("#findings")
        assert page.inner_text("#rules").strip()
        page.screenshot(path=str(ARTIFACTS / "console-explanation.png"), full_page=True)

        # Live status: the request rate (metrics); models and workers need the admin role.
        page.click("text=Status")
        page.wait_for_selector("#status-error:has-text('admin role')")  # (no eval: the CSP forbids it)
        page.screenshot(path=str(ARTIFACTS / "console-status.png"), full_page=True)
        assert not errors, errors
    finally:
        page.close()


def test_the_admin_sees_models_per_device_and_worker_health(
    explained: tuple[Gateway, str, str], browser: Any
) -> None:
    gw, _, _ = explained
    page = browser.new_page()
    try:
        page.goto(gw.base_url + "/console")
        page.fill("#login-key", gw.admin_key)
        page.click("#login-form button")
        page.wait_for_selector("#search-form")
        page.click("text=Status")
        page.wait_for_selector("#workers tbody tr")
        assert "demo" in page.inner_text("#workers") and "ready" in page.inner_text("#workers")
        assert "demo" in page.inner_text("#devices")
        deadline = time.monotonic() + 20  # two metrics polls, 5 s apart
        while not re.fullmatch(r"[0-9.]+", page.inner_text("#rate")):
            assert time.monotonic() < deadline, page.inner_text("#rate")
            page.wait_for_timeout(250)
    finally:
        page.close()


def test_a_wrong_key_is_refused_and_the_page_allows_nothing_inline(
    explained: tuple[Gateway, str, str], browser: Any
) -> None:
    gw, _, _ = explained
    user = gw.create_key("console-nobody", "user")
    page = browser.new_page()
    try:
        response = page.goto(gw.base_url + "/console")
        assert response is not None
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        page.fill("#login-key", user)
        page.click("#login-form button")
        page.wait_for_selector("#login-error:has-text('auditor or admin')")
        assert page.is_hidden("#nav")  # still logged out
        page.reload()
        assert page.is_visible("#login-form") and page.is_hidden("#nav")  # a refused key is not kept
    finally:
        page.close()


@pytest.mark.parametrize("tamper", ["proof", "position"])
def test_a_tampered_proof_or_position_is_not_verified(
    explained: tuple[Gateway, str, str], browser: Any, tamper: str
) -> None:
    import base64

    gw, request_id, auditor = explained
    page = browser.new_page()

    def altered(route: Any) -> None:  # what a lying server (or a man in the middle) would send
        response = route.fetch()
        body = response.json()
        if tamper == "proof":
            assert body["inclusion_proof"], "a one-entry tree has no proof to alter"
            body["inclusion_proof"][0] = base64.b64encode(bytes(32)).decode()
        else:  # claim another leaf (and tree size) than the signed data says
            body["leaf_index"] += 1
            body["seq"] += 1
            body["tree_size"] += 1
        route.fulfill(response=response, json=body)

    page.route("**/v1/audit/entries/*", altered)
    try:
        page.goto(gw.base_url + "/console")
        page.fill("#login-key", auditor)
        page.click("#login-form button")
        page.wait_for_selector("#search-form")
        page.goto(f"{gw.base_url}/console#entry/{request_id}")
        page.wait_for_selector("#proof[data-verified]")
        assert page.get_attribute("#proof", "data-verified") == "false"
        assert "NOT verified" in page.inner_text("#proof")
    finally:
        page.close()


def test_signing_in_at_the_openid_provider(
    explained: tuple[Gateway, str, str], browser: Any, idp: LocalIdp
) -> None:
    gw, request_id, _ = explained
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        response = page.goto(gw.base_url + "/console")
        assert response is not None
        assert idp.url in response.headers["content-security-policy"]  # connect-src: its token endpoint
        page.click("#oidc-login")  # to the provider, which signs ann in, and back with a code
        page.wait_for_selector("#search-form")  # the code was exchanged (PKCE) and the token accepted
        assert "code=" not in page.url  # the single-use code does not stay in the address bar
        row = page.locator(f"#results tr[data-request-id='{request_id}']")
        row.wait_for()
        assert not errors, errors
    finally:
        page.close()
    # The console's calls were the signed-in user's: audited as an OIDC principal.
    entries = [e for e in audit_reader.entries(gw.home) if e["endpoint"] == "audit.search"]
    assert any(e["principal_id"].startswith("oidc:") and e["decision"] == "allow" for e in entries)
