"""C2SP signed notes, against the golden vectors of golang.org/x/mod/sumdb/note (note_test.go)."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from gateway.audit import note
from gateway.audit.note import NoteError, NoteSigner, NoteVerifier, Signature
from gateway.errors import AuditVerifyError

# golang.org/x/mod/sumdb/note/note_test.go (TestNewSigner, TestSign, TestOpen, TestVerifierList)
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_B64 = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
ENOCH_B64 = "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
PETER_SIG = f"— PeterNeumann {PETER_B64}\n"
ENOCH_SIG = f"— EnochRoot {ENOCH_B64}\n"
PETER = Signature("PeterNeumann", 0xC74F20A3, PETER_B64)
ENOCH = Signature("EnochRoot", 0xAF0CFE78, ENOCH_B64)

# c2sp.org/signed-note: the example note; its text holds a blank line (no key is published).
C2SP_EXAMPLE = (
    "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n\n"
    "— quasimodo.example/salvatore "
    "NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
)


def peter() -> NoteVerifier:
    return NoteVerifier.from_key_string(PETER_VKEY)


def enoch() -> NoteVerifier:
    return NoteVerifier.from_key_string(ENOCH_VKEY)


def insert_abcd(sig_line: str) -> str:
    """Go's ``sig[:60] + "ABCD" + sig[60:]``, a byte offset (the em dash is three bytes)."""
    raw = sig_line.encode()
    return (raw[:60] + b"ABCD" + raw[60:]).decode()


# ---- keys -----------------------------------------------------------------------------------


def test_error_is_an_audit_verify_error() -> None:
    assert issubclass(NoteError, AuditVerifyError)


def test_key_id_golden() -> None:
    pub = base64.b64decode(PETER_VKEY.split("+", 2)[2])[1:]
    assert note.key_id("PeterNeumann", Ed25519PublicKey.from_public_bytes(pub)) == 0xC74F20A3
    digest = hashlib.sha256(b"PeterNeumann\n\x01" + pub).digest()
    assert int.from_bytes(digest[:4], "big") == 0xC74F20A3


def test_signer_key_string_golden() -> None:
    signer = NoteSigner.from_key_string(PETER_SKEY)
    assert (signer.name, signer.key_id) == ("PeterNeumann", 0xC74F20A3)
    assert signer.verifier_key_string() == PETER_VKEY
    assert signer.signer_key_string() == PETER_SKEY
    assert signer.verifier() == peter()


@pytest.mark.parametrize(
    ("vkey", "name", "kid"), [(PETER_VKEY, "PeterNeumann", 0xC74F20A3), (ENOCH_VKEY, "EnochRoot", 0xAF0CFE78)]
)
def test_verifier_key_string_golden(vkey: str, name: str, kid: int) -> None:
    verifier = NoteVerifier.from_key_string(vkey)
    assert (verifier.name, verifier.key_id) == (name, kid)
    assert verifier.verifier_key_string() == vkey


def test_verifier_key_string_accepts_upper_case_hex_like_go() -> None:
    assert NoteVerifier.from_key_string(PETER_VKEY.replace("c74f20a3", "C74F20A3")) == peter()


def test_generated_key_round_trips_through_key_strings() -> None:
    signer = NoteSigner.generate("example.com/log")
    again = NoteSigner.from_key_string(signer.signer_key_string())
    assert again.verifier() == signer.verifier()
    verifier = NoteVerifier.from_key_string(signer.verifier_key_string())
    assert verifier.verify(b"hi", signer.sign(b"hi"))
    assert not verifier.verify(b"hj", signer.sign(b"hi"))


def manglings(key: str) -> list[str]:
    """Go's TestNewVerifier/TestNewSigner: every proper substring, and each byte plus one."""
    out = [
        key[i:j] for i in range(len(key) + 1) for j in range(i + 1, len(key) + 1) if (i, j) != (0, len(key))
    ]
    out += [key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key))]
    return out


def test_mangled_verifier_keys_rejected() -> None:
    bad = [
        *manglings(PETER_VKEY),
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",  # wrong length
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown algorithm
    ]
    for vkey in bad:
        with pytest.raises(NoteError):
            NoteVerifier.from_key_string(vkey)


def test_mangled_signer_keys_rejected_without_echoing_the_key() -> None:
    secret = PETER_SKEY.rsplit("+", 1)[1]
    for skey in manglings(PETER_SKEY):
        with pytest.raises(NoteError) as info:
            NoteSigner.from_key_string(skey)
        assert secret[:12] not in str(info.value)


def test_signer_repr_holds_no_key_material() -> None:
    signer = NoteSigner.from_key_string(PETER_SKEY)
    assert repr(signer) == "NoteSigner('PeterNeumann', key_id=c74f20a3)"
    assert "AYEKFALV" not in repr(signer)


@pytest.mark.parametrize(
    "name", ["", "Peter Neumann", "a+b", "tab\there", "nbsp\u00a0", "ideo\u3000", "nl\n", "\x01"]
)
def test_invalid_key_names_rejected(name: str) -> None:
    with pytest.raises(NoteError, match="key name"):
        NoteSigner(name, Ed25519PrivateKey.generate())
    assert not note.is_valid_key_name(name)


def test_url_like_and_non_ascii_key_names_accepted() -> None:
    for name in ("example.com/log42", "quasimodo.example/salvatore", "δοκιμή"):
        assert NoteSigner(name, Ed25519PrivateKey.generate()).name == name


# ---- sign -----------------------------------------------------------------------------------


def test_sign_golden() -> None:
    signed = note.sign(TEXT, [NoteSigner.from_key_string(PETER_SKEY)])
    assert signed == (TEXT + "\n" + PETER_SIG).encode()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("abc", "end with a newline"),
        ("", "end with a newline"),
        ("a\rb\n", "control character"),
        ("a\x00\n", "control character"),
        ("\ud800\n", "UTF-8"),
    ],
)
def test_sign_refuses_bad_text(text: str, match: str) -> None:
    with pytest.raises(NoteError, match=match):
        note.sign(text, [NoteSigner.from_key_string(PETER_SKEY)])


def test_sign_needs_a_signer_and_refuses_the_same_key_twice() -> None:
    signer = NoteSigner.from_key_string(PETER_SKEY)
    with pytest.raises(NoteError, match="at least one signer"):
        note.sign(TEXT, [])
    with pytest.raises(NoteError, match="two signers"):
        note.sign(TEXT, [signer, signer])


def test_sign_with_several_keys_lists_them_in_order() -> None:
    a, b = NoteSigner.generate("a.example/log"), NoteSigner.generate("b.example/witness")
    opened = note.open(note.sign(TEXT, [a, b]), [a.verifier(), b.verifier()])
    assert [s.name for s in opened.sigs] == ["a.example/log", "b.example/witness"]
    assert [s.key_id for s in opened.sigs] == [a.key_id, b.key_id]


# ---- open -----------------------------------------------------------------------------------


def test_open_one_verified_one_unverified() -> None:
    opened = note.open(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter()])
    assert opened.text == TEXT
    assert opened.sigs == (PETER,)
    assert opened.unverified_sigs == (ENOCH,)


def test_open_both_verified() -> None:
    opened = note.open((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [peter(), enoch()])
    assert opened.sigs == (PETER, ENOCH)
    assert opened.unverified_sigs == ()


@pytest.mark.parametrize("verifiers", [[], [NoteSigner.generate("PeterNeumann").verifier()]])
def test_open_without_a_known_key_fails(verifiers: list[NoteVerifier]) -> None:
    with pytest.raises(NoteError, match="no signature by a known key"):
        note.open(TEXT + "\n" + PETER_SIG + ENOCH_SIG, verifiers)


def test_c2sp_example_is_well_formed_and_its_text_keeps_its_blank_line() -> None:
    # No key is published for it: it parses, then fails for want of a known key, not as malformed.
    with pytest.raises(NoteError, match=r"no signature by a known key.*quasimodo\.example/salvatore"):
        note.open(C2SP_EXAMPLE, [peter()])
    signer = NoteSigner.generate("quasimodo.example/salvatore")
    text = C2SP_EXAMPLE.split("\n\n— ")[0] + "\n"
    assert note.open(note.sign(text, [signer]), [signer.verifier()]).text == text


def test_same_verifier_twice_is_fine_but_two_keys_with_one_name_and_id_are_ambiguous(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert note.open(TEXT + "\n" + ENOCH_SIG, [enoch(), peter(), enoch()]).sigs == (ENOCH,)
    known = peter()
    monkeypatch.setattr(note, "key_id", lambda name, public_key: 0x01020304)
    a = NoteVerifier("same", Ed25519PrivateKey.generate().public_key())
    b = NoteVerifier("same", Ed25519PrivateKey.generate().public_key())
    with pytest.raises(NoteError, match=r"ambiguous verifiers.*'same'.*01020304"):
        note.open(TEXT + "\n" + PETER_SIG, [known, a, b])


def test_signature_count_limit() -> None:
    at_limit = TEXT + "\n" + PETER_SIG + ENOCH_SIG * 99
    assert note.open(at_limit, [peter()]).unverified_sigs == (ENOCH,)
    for verifiers in ([peter()], []):
        with pytest.raises(NoteError, match="more than 100"):
            note.open(TEXT + "\n" + PETER_SIG * 101, verifiers)


def test_invalid_signature_by_a_known_key_rejects_the_note() -> None:
    msg = TEXT + "\n" + ENOCH_SIG + insert_abcd(PETER_SIG)
    with pytest.raises(NoteError, match=r"invalid signature for key PeterNeumann\+c74f20a3"):
        note.open(msg, [peter(), enoch()])


def test_valid_signature_after_an_invalid_one_does_not_save_the_note() -> None:
    msg = TEXT + "\n" + insert_abcd(PETER_SIG) + ENOCH_SIG
    with pytest.raises(NoteError, match="invalid signature"):
        note.open(msg, [peter(), enoch()])


def test_duplicate_signature_by_a_known_key_rejected() -> None:
    # Go skips the second (unverified); the spec says every known-key signature is verified.
    with pytest.raises(NoteError, match=r"two signatures by key PeterNeumann\+c74f20a3"):
        note.open(TEXT + "\n" + PETER_SIG + PETER_SIG, [peter()])
    with pytest.raises(NoteError, match="two signatures"):
        note.open(TEXT + "\n" + PETER_SIG + insert_abcd(PETER_SIG), [peter()])


def test_repeated_unknown_signatures_are_dropped_like_go() -> None:
    enoch_abcd = Signature("EnochRoot", 0xAF0CFE78, insert_abcd(ENOCH_SIG)[len("— EnochRoot ") : -1])
    assert enoch_abcd.base64.startswith("rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5nABCD2tiOHp")
    opened = note.open(TEXT + "\n" + PETER_SIG + ENOCH_SIG + ENOCH_SIG + insert_abcd(ENOCH_SIG), [peter()])
    assert opened.sigs == (PETER,)
    assert opened.unverified_sigs == (ENOCH, enoch_abcd)


def test_tampered_text_rejected() -> None:
    tampered = TEXT.replace("problem,", "problem;") + "\n" + PETER_SIG
    with pytest.raises(NoteError, match="invalid signature"):
        note.open(tampered, [peter()])


def test_rotation_old_notes_verify_with_old_and_new_verifiers() -> None:
    old = NoteSigner.generate("example.com/log")
    new = NoteSigner.generate("example.com/log")
    assert old.key_id != new.key_id
    old_note, new_note = note.sign(TEXT, [old]), note.sign(TEXT, [new])
    both = [new.verifier(), old.verifier()]
    assert note.open(old_note, both).sigs[0].key_id == old.key_id
    assert note.open(new_note, both).sigs[0].key_id == new.key_id
    with pytest.raises(NoteError, match="no signature by a known key"):
        note.open(old_note, [new.verifier()])


BAD_MESSAGES = [
    # Go's TestOpen badMsgs
    TEXT,
    TEXT + "\n",
    TEXT + "\n" + PETER_SIG[:-1],
    "\x01" + TEXT + "\n" + PETER_SIG,
    b"\xff" + (TEXT + "\n" + PETER_SIG).encode(),
    TEXT + "\n" + "— Bad Name " + PETER_B64,
    TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    # more classes
    TEXT + "\n" + "— Bad Name " + PETER_B64 + "\n",
    TEXT + "\n" + PETER_SIG.replace("—", "-"),
    TEXT + "\n" + PETER_SIG.replace("— ", "—"),
    TEXT + "\n" + "— PeterNeumann\n",
    TEXT + "\n" + "— PeterNeumann \n",
    TEXT + "\n" + "— " + PETER_B64 + "\n",
    TEXT + "\n" + PETER_SIG.replace("AM=", "AN="),  # non-canonical base64
    TEXT + "\n" + PETER_SIG.replace("AM=", "AM"),  # unpadded
    TEXT + "\n" + "— PeterNeumann x08goA==\n",  # key id and one byte short
    TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Peter+Neumann"),
    TEXT + "\n" + PETER_SIG + "\n",
    TEXT + "\n" + PETER_SIG.replace("\n", "\r\n"),
    TEXT.replace("\n", "\r\n") + "\r\n" + PETER_SIG,
    "\ud800" + TEXT + "\n" + PETER_SIG,
    b"\xed\xa0\x80" + (TEXT + "\n" + PETER_SIG).encode(),  # an encoded surrogate
    b"\xc0\xaf" + (TEXT + "\n" + PETER_SIG).encode(),  # overlong
]


@pytest.mark.parametrize("msg", BAD_MESSAGES)
def test_malformed_notes_rejected(msg: str | bytes) -> None:
    with pytest.raises(NoteError):
        note.open(msg, [peter()])


def test_wrong_type_rejected() -> None:
    with pytest.raises(NoteError, match="bytes or str"):
        note.open(bytearray(b"x"), [peter()])  # type: ignore[arg-type]


# ---- properties -----------------------------------------------------------------------------

SIGNER = NoteSigner.from_key_string(PETER_SKEY)
NOTE_CHARS = st.characters(codec="utf-8", exclude_characters=[chr(c) for c in range(32) if c != 10])


@given(st.text(NOTE_CHARS))
def test_sign_then_open_round_trips(body: str) -> None:
    text = body + "\n"
    opened = note.open(note.sign(text, [SIGNER]), [SIGNER.verifier()])
    assert opened.text == text
    assert opened.sigs[0].name == "PeterNeumann"


@given(st.binary(max_size=400) | st.text(max_size=400))
def test_open_arbitrary_input_raises_only_note_error(msg: bytes | str) -> None:
    with contextlib.suppress(NoteError):
        note.open(msg, [peter()])


GOLDEN = (TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()


@given(st.integers(0, len(GOLDEN) - 1), st.integers(0, 255), st.sampled_from(["replace", "insert", "delete"]))
def test_mutated_golden_note_never_verifies_a_changed_text(pos: int, byte: int, how: str) -> None:
    if how == "replace":
        msg = GOLDEN[:pos] + bytes([byte]) + GOLDEN[pos + 1 :]
    elif how == "insert":
        msg = GOLDEN[:pos] + bytes([byte]) + GOLDEN[pos:]
    else:
        msg = GOLDEN[:pos] + GOLDEN[pos + 1 :]
    try:
        opened = note.open(msg, [peter(), enoch()])
    except NoteError:
        return
    assert opened.text == TEXT
