from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import ConfigError, InvalidRequest, NotFound, ServiceUnavailable
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
    with pytest.raises(NotFound) as info:
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


def test_scopes_limits_and_expiry_are_stored(store: ApiKeyStore) -> None:
    key, info = store.create(
        "scoped",
        "user",
        "acme",
        rpm=10,
        tpm=1000,
        daily_tokens=50000,
        models=["demo", "demo"],
        endpoints=["chat.completions", "models.list"],
        expires_in=timedelta(days=3),
    )

    assert info.models == ("demo",)  # repeats dropped
    assert info.endpoints == ("chat.completions", "models.list")
    assert (info.rpm, info.tpm, info.daily_tokens) == (10, 1000, 50000)
    assert store.get("scoped") == store.get(info.id) == store.authenticate(key) == info
    assert info.allows_model("demo") and not info.allows_model("other")
    assert info.allows_endpoint("chat.completions") and not info.allows_endpoint("completions")
    row = info.as_dict(datetime.now(UTC))
    assert row["models"] == ["demo"] and row["status"] == "active" and row["last_used_at"] is None
    assert "key_hash" not in row and key not in str(row)


def test_a_key_without_scopes_allows_everything(store: ApiKeyStore) -> None:
    _, info = store.create("open", "user", "acme")

    assert info.models is None and info.endpoints is None
    assert info.allows_model("anything") and info.allows_endpoint("admin.keys")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("models", []),
        ("models", ["bad name with spaces"]),
        ("models", [7]),
        ("endpoints", ["images.generate"]),
        ("endpoints", []),
        ("rpm", 0),
        ("tpm", -5),
        ("daily_tokens", 10**13),
        ("tpm", True),
    ],
)
def test_bad_scopes_and_limits_are_refused(store: ApiKeyStore, field: str, value: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        store.create("k", "user", "acme", **{field: value})  # type: ignore[arg-type]

    assert info.value.param == field
    assert store.list() == []


def test_last_used_is_recorded_at_most_once_a_minute(store: ApiKeyStore, db: Path) -> None:
    key, info = store.create("alice", "user", "acme")

    assert store.get(info.id).last_used_at is None
    store.authenticate(key)
    store.flush()  # written in a thread of its own
    first = store.get(info.id).last_used_at
    assert first is not None
    assert abs(datetime.fromisoformat(first) - datetime.now(UTC)) < timedelta(minutes=1)
    with sqlite3.connect(db) as conn:  # pretend the last use was two minutes ago
        earlier = (datetime.fromisoformat(first) - timedelta(minutes=2)).isoformat()
        conn.execute("UPDATE api_keys SET last_used_at = ?", (earlier,))
    store.authenticate(key)
    store.flush()
    assert store.get(info.id).last_used_at != earlier  # older than a minute: written again
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE api_keys SET last_used_at = ?", (first,))
    store.authenticate(key)  # within the minute: no write
    store.flush()
    assert store.get(info.id).last_used_at == first


def test_a_failed_authentication_does_not_count_as_use(store: ApiKeyStore) -> None:
    key, info = store.create("alice", "user", "acme")
    store.revoke("alice")

    assert store.authenticate(key) is None
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.get(info.id).last_used_at is None


def test_an_older_database_gains_the_new_columns(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, key_hash TEXT NOT NULL,"
            " role TEXT NOT NULL, tenant TEXT NOT NULL, rpm INTEGER, created_at TEXT NOT NULL,"
            " expires_at TEXT, revoked_at TEXT)"
        )
        conn.execute(
            "INSERT INTO api_keys VALUES ('0123456789abcdef', 'old', 'h', 'user', 't', 5, '2026-01-01T00:00:00+00:00',"
            " NULL, NULL)"
        )
    store = ApiKeyStore(db, PEPPER)

    old = store.get("old")
    assert (old.rpm, old.tpm, old.models, old.endpoints, old.last_used_at) == (5, None, None, None, None)
    store.create("new", "user", "t", tpm=9)
    assert store.get("new").tpm == 9
