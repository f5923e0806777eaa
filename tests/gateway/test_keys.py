from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import ConfigError, InvalidRequest, ServiceUnavailable
from gateway.keys import ApiKeyStore, KeyInfo
from gateway.types import Principal
from tests.gateway.conftest import make_expired_key

PEPPER = b"p" * 32
KEY_RE = re.compile(r"^sk-llmos-([0-9a-f]{16})-([A-Za-z0-9_-]{32,64})$")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "keys.db"


@pytest.fixture
def store(db: Path) -> ApiKeyStore:
    return ApiKeyStore(db, PEPPER)


def test_create_returns_a_well_formed_key_and_its_facts(store: ApiKeyStore) -> None:
    key, info = store.create("alice", "user", "acme", rpm=30)

    match = KEY_RE.match(key)
    assert match is not None
    assert match.group(1) == info.id
    assert (info.name, info.role, info.tenant, info.rpm) == ("alice", "user", "acme", 30)
    assert info.expires_at is None
    assert info.revoked_at is None
    created = datetime.fromisoformat(info.created_at)
    assert abs(created - datetime.now(UTC)) < timedelta(minutes=1)


def test_keys_are_unique(store: ApiKeyStore) -> None:
    keys = [store.create(f"k{i}", "user", "t")[0] for i in range(5)]

    assert len(set(keys)) == 5
    assert len({KEY_RE.match(k).group(1) for k in keys}) == 5  # type: ignore[union-attr]


def test_authenticate_returns_the_active_key(store: ApiKeyStore) -> None:
    key, info = store.create("alice", "admin", "acme")

    assert store.authenticate(key) == info


def test_authenticate_works_from_another_store_on_the_same_file(db: Path, store: ApiKeyStore) -> None:
    key, info = store.create("alice", "user", "acme")

    assert ApiKeyStore(db, PEPPER).authenticate(key) == info


def test_a_different_pepper_does_not_authenticate(db: Path, store: ApiKeyStore) -> None:
    key, _ = store.create("alice", "user", "acme")

    assert ApiKeyStore(db, b"q" * 32).authenticate(key) is None


def test_only_keyed_hashes_are_stored(db: Path, store: ApiKeyStore) -> None:
    keys = [store.create(f"user{i}", "user", "t")[0] for i in range(3)]

    raw = b"".join(p.read_bytes() for p in db.parent.iterdir() if p.name.startswith(db.name))
    for key in keys:
        secret = key[len("sk-llmos-") + 17 :]  # the secret itself may contain "-"
        assert len(secret) >= 32
        assert key.encode() not in raw
        assert secret.encode() not in raw
    with sqlite3.connect(db) as conn:
        hashes = [r[0] for r in conn.execute("SELECT key_hash FROM api_keys")]
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: k + "x",
        lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),
        lambda k: k.replace("sk-llmos-", "sk-other-"),
        lambda k: k.upper(),
        lambda k: k.rsplit("-", 1)[0],
        lambda k: " " + k,
    ],
    ids=["suffix", "last-char", "prefix", "upper", "no-secret", "leading-space"],
)
def test_altered_keys_do_not_authenticate(store: ApiKeyStore, mangle) -> None:
    key, _ = store.create("alice", "user", "acme")

    assert store.authenticate(mangle(key)) is None


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "sk-llmos-",
        "not-a-key",
        "sk-llmos-0123456789abcdef-" + "a" * 43,  # well formed, unknown id
        "sk-llmos-0123456789abcdef-short",
        "sk-llmos-0123456789ABCDEF-" + "a" * 43,
        "sk-llmos-0123456789abcdef-" + "a" * 65,
        "sk-llmos-0123456789abcdef-" + "a" * 42 + "!",
        "' OR 1=1 --",
    ],
)
def test_unknown_or_malformed_keys_do_not_authenticate(store: ApiKeyStore, presented: str) -> None:
    store.create("alice", "user", "acme")

    assert store.authenticate(presented) is None


def test_a_key_for_another_id_does_not_authenticate(store: ApiKeyStore) -> None:
    key_a, _ = store.create("a", "user", "t")
    _, info_b = store.create("b", "user", "t")
    forged = f"sk-llmos-{info_b.id}-{key_a.rsplit('-', 1)[1]}"

    assert store.authenticate(forged) is None


def test_revoked_key_does_not_authenticate(store: ApiKeyStore) -> None:
    key, _ = store.create("alice", "user", "acme")
    other, other_info = store.create("bob", "user", "acme")

    revoked = store.revoke("alice")

    assert revoked.revoked_at is not None
    assert revoked.status(datetime.now(UTC)) == "revoked"
    assert store.authenticate(key) is None
    assert store.authenticate(other) == other_info


def test_revoke_by_id(store: ApiKeyStore) -> None:
    key, info = store.create("alice", "user", "acme")

    assert store.revoke(info.id).name == "alice"
    assert store.authenticate(key) is None


def test_revoking_twice_keeps_the_first_time(store: ApiKeyStore) -> None:
    store.create("alice", "user", "acme")
    first = store.revoke("alice")

    assert store.revoke("alice").revoked_at == first.revoked_at


def test_revoke_unknown_key(store: ApiKeyStore) -> None:
    with pytest.raises(InvalidRequest) as info:
        store.revoke("nobody")

    assert info.value.code == "key_not_found"


def test_expired_key_does_not_authenticate(store: ApiKeyStore, db: Path) -> None:
    key = make_expired_key(store, db, "old")

    (info,) = store.list()
    assert info.status(datetime.now(UTC)) == "expired"
    assert store.authenticate(key) is None


@pytest.mark.parametrize("expiry", [timedelta(0), timedelta(seconds=-1)])
def test_expiry_must_be_in_the_future(store: ApiKeyStore, expiry: timedelta) -> None:
    with pytest.raises(InvalidRequest):
        store.create("bad-expiry", "user", "acme", expires_in=expiry)
    assert store.list() == []


def test_names_that_look_like_ids_are_refused(store: ApiKeyStore) -> None:
    with pytest.raises(InvalidRequest):
        store.create("0123456789abcdef", "user", "acme")


def test_unexpired_key_authenticates(store: ApiKeyStore) -> None:
    key, info = store.create("new", "user", "acme", expires_in=timedelta(days=1))

    assert info.expires_at is not None
    assert datetime.fromisoformat(info.expires_at) > datetime.now(UTC) + timedelta(hours=23)
    assert store.authenticate(key) == info


@pytest.mark.parametrize(
    ("expires_at", "revoked_at", "status"),
    [
        (None, None, "active"),
        ("2000-01-01T00:00:00+00:00", None, "expired"),
        ("2100-01-01T00:00:00+00:00", None, "active"),
        ("2025-06-01T12:00:00+00:00", None, "expired"),  # exactly now: expired
        ("2100-01-01T00:00:00+00:00", "2020-01-01T00:00:00+00:00", "revoked"),
        ("2000-01-01T00:00:00+00:00", "2020-01-01T00:00:00+00:00", "revoked"),
    ],
)
def test_key_status(expires_at: str | None, revoked_at: str | None, status: str) -> None:
    info = KeyInfo("0" * 16, "n", "user", "t", None, "2020-01-01T00:00:00+00:00", expires_at, revoked_at)

    assert info.status(datetime(2025, 6, 1, 12, 0, tzinfo=UTC)) == status


def test_principal_of_a_key(store: ApiKeyStore) -> None:
    _, info = store.create("alice", "auditor", "acme")

    assert info.principal() == Principal(
        id=f"key:{info.id}", name="alice", tenant="acme", roles=("auditor",), auth_method="api_key"
    )


def test_names_are_unique(store: ApiKeyStore) -> None:
    store.create("alice", "user", "acme")

    with pytest.raises(InvalidRequest, match="already exists"):
        store.create("alice", "admin", "other")
    assert [k.name for k in store.list()] == ["alice"]


def test_list_returns_facts_and_has_key(store: ApiKeyStore) -> None:
    _, a = store.create("alice", "user", "acme")
    store.create("bob", "admin", "default", rpm=5)
    store.revoke("bob")

    listed = {k.name: k for k in store.list()}

    assert set(listed) == {"alice", "bob"}
    assert listed["alice"] == a
    assert listed["bob"].rpm == 5
    assert listed["bob"].revoked_at is not None
    assert store.has_key("alice")
    assert not store.has_key("carol")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "key name"),
        ({"name": "-dash-first"}, "key name"),
        ({"name": "has space"}, "key name"),
        ({"name": "x" * 65}, "key name"),
        ({"name": "semi;colon"}, "key name"),
        ({"role": "Root"}, r"role must be a lowercase name \(built-in: admin, user, auditor"),
        ({"role": "has space"}, "role must be a lowercase name"),
        ({"tenant": ""}, "tenant"),
        ({"tenant": "a/b"}, "tenant"),
        ({"tenant": "t" * 65}, "tenant"),
        ({"rpm": 0}, "rpm"),
        ({"rpm": -5}, "rpm"),
    ],
)
def test_create_validates_its_arguments(store: ApiKeyStore, kwargs: dict, message: str) -> None:
    args = {"name": "alice", "role": "user", "tenant": "acme", **kwargs}
    rpm = args.pop("rpm", None)

    with pytest.raises(InvalidRequest, match=message):
        store.create(args["name"], args["role"], args["tenant"], rpm=rpm)
    assert store.list() == []


@pytest.mark.parametrize("name", ["a", "alice@example.com", "svc.bot_1-x", "A" * 64])
def test_valid_names(store: ApiKeyStore, name: str) -> None:
    assert store.create(name, "user", name)[1].name == name


def test_unusable_database_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open the API key database"):
        ApiKeyStore(tmp_path / "missing-dir" / "keys.db", PEPPER)


@pytest.mark.parametrize(("name", "tenant"), [("mallory\n", "acme"), ("mallory", "acme\n"), ("a b", "acme")])
def test_names_and_tenants_must_match_whole(store: ApiKeyStore, name: str, tenant: str) -> None:
    with pytest.raises(InvalidRequest):
        store.create(name, "user", tenant)


@pytest.mark.parametrize(
    "kwargs", [{"rpm": 0}, {"rpm": 10**20}, {"expires_in": timedelta(days=3_000_000)}], ids=str
)
def test_out_of_range_limits_are_refused(store: ApiKeyStore, kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        store.create("limits", "user", "acme", **kwargs)  # type: ignore[arg-type]


def test_a_locked_key_database_is_a_503_not_a_hang(store: ApiKeyStore, db: Path) -> None:
    key, _ = store.create("locked", "user", "acme")
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("PRAGMA locking_mode = EXCLUSIVE")
        blocker.execute("BEGIN EXCLUSIVE")
        blocker.execute("UPDATE api_keys SET rpm = 1")
        with pytest.raises(ServiceUnavailable) as err:
            store.authenticate(key)
        assert err.value.code == "auth_unavailable"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.authenticate(key) is not None
