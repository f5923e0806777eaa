from __future__ import annotations

from pathlib import Path

import pytest

from gateway.auth import INVALID, MISSING, bearer_token
from gateway.errors import AuthenticationFailed
from gateway.identity import Authenticator
from gateway.keys import ApiKeyStore
from tests.gateway.conftest import make_expired_key


@pytest.fixture
def store(tmp_path: Path) -> ApiKeyStore:
    return ApiKeyStore(tmp_path / "keys.db", b"k" * 32)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer   abc  ", "abc"),
        ("  Bearer abc", "abc"),
        ("Bearer sk-llmos-0123456789abcdef-xyz", "sk-llmos-0123456789abcdef-xyz"),
    ],
)
def test_bearer_token(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "   ",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "abc",
        "Bearer\tabc",
    ],
)
def test_missing_or_wrong_scheme_is_missing_api_key(header: str | None) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        bearer_token(header)

    assert info.value.code == "missing_api_key"
    assert info.value.message == MISSING
    assert info.value.status == 401


def test_authenticate_returns_the_key(store: ApiKeyStore) -> None:
    key, info = store.create("alice", "user", "acme")

    assert Authenticator(store).authenticate(f"Bearer {key}").key == info


def test_authenticate_without_header_is_missing_api_key(store: ApiKeyStore) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        Authenticator(store).authenticate(None)

    assert info.value.code == "missing_api_key"


def _failure(header: str, store: ApiKeyStore) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as info:
        Authenticator(store).authenticate(header)
    return info.value


def test_unknown_revoked_and_expired_keys_fail_identically(store: ApiKeyStore, tmp_path: Path) -> None:
    revoked, _ = store.create("revoked", "user", "acme")
    store.revoke("revoked")
    expired = make_expired_key(store, tmp_path / "keys.db", "expired")
    active, _ = store.create("active", "user", "acme")
    unknown = "sk-llmos-0123456789abcdef-" + "a" * 43
    wrong_secret = active[:-4] + ("aaaa" if not active.endswith("aaaa") else "bbbb")

    failures = [_failure(f"Bearer {k}", store) for k in (unknown, revoked, expired, wrong_secret, "garbage")]

    assert {(f.code, f.message, f.status, f.type, f.param) for f in failures} == {
        ("invalid_api_key", INVALID, 401, "authentication_error", None)
    }
    for f, key in zip(failures, (unknown, revoked, expired, wrong_secret), strict=False):
        assert key not in str(f)
