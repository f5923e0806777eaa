"""Which credential path a request takes, and what a refusal carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.identity import Authenticator, AuthFailure
from gateway.keys import ApiKeyStore
from gateway.oidc import TokenRejected
from gateway.types import Principal

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
OIDC_PRINCIPAL = Principal(id="oidc:x:svc", name="svc", tenant="acme", roles=("user",), auth_method="oidc")


class Tokens:
    def __init__(self, reject: str | None = None) -> None:
        self.seen: list[str] = []
        self.reject = reject

    def verify(self, token: str) -> Principal:
        self.seen.append(token)
        if self.reject:
            raise TokenRejected(self.reject)
        return OIDC_PRINCIPAL


@pytest.fixture
def keys(tmp_path: Path) -> ApiKeyStore:
    return ApiKeyStore(tmp_path / "keys.db", b"p" * 32)


def test_api_keys_and_tokens_take_their_own_paths(keys: ApiKeyStore) -> None:
    key, info = keys.create("alice", "user", "acme")
    tokens = Tokens()
    auth = Authenticator(keys, tokens=tokens)

    by_key = auth.authenticate(f"Bearer {key}")
    assert by_key.principal == info.principal() and by_key.key == info
    by_token = auth.authenticate(f"Bearer {JWT}")
    assert by_token.principal == OIDC_PRINCIPAL and by_token.key is None
    assert tokens.seen == [JWT]  # the API key never reached the token verifier


def test_without_issuers_a_jwt_is_just_a_wrong_key(keys: ApiKeyStore) -> None:
    with pytest.raises(AuthFailure) as err:
        Authenticator(keys).authenticate(f"Bearer {JWT}")
    assert (err.value.reason, err.value.method) == ("invalid_api_key", "api_key")


def test_something_that_is_not_a_jwt_is_not_sent_to_the_verifier(keys: ApiKeyStore) -> None:
    tokens = Tokens()
    with pytest.raises(AuthFailure) as err:
        Authenticator(keys, tokens=tokens).authenticate("Bearer not-a-key")
    assert err.value.reason == "invalid_api_key" and tokens.seen == []


def test_a_rejected_token_keeps_its_reason_but_not_its_detail(keys: ApiKeyStore) -> None:
    with pytest.raises(AuthFailure) as err:
        Authenticator(keys, tokens=Tokens(reject="expired")).authenticate(f"Bearer {JWT}")
    assert (err.value.reason, err.value.method, err.value.code) == ("expired", "oidc", "invalid_token")
    assert err.value.message == "Invalid or expired bearer token."
    assert JWT not in str(err.value)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer   "])
def test_no_credential_is_missing(keys: ApiKeyStore, header: str | None) -> None:
    with pytest.raises(AuthFailure) as err:
        Authenticator(keys).authenticate(header)
    assert (err.value.reason, err.value.method, err.value.code) == ("missing", "none", "missing_api_key")


@pytest.mark.parametrize("size", [16 * 1024 + 1, 300_000])
def test_a_huge_authorization_header_is_refused_before_parsing(keys: ApiKeyStore, size: int) -> None:
    tokens = Tokens()
    with pytest.raises(AuthFailure) as err:
        Authenticator(keys, tokens=tokens).authenticate("Bearer " + "a" * size)
    assert (err.value.reason, err.value.status) == ("too_large", 401)
    assert tokens.seen == []
