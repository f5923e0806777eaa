"""C2SP tlog-checkpoint bodies and signed checkpoints."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.audit import note
from gateway.audit.checkpoint import (
    MAX_TREE_SIZE,
    Checkpoint,
    CheckpointError,
    sign_checkpoint,
    verify_checkpoint,
)
from gateway.audit.note import NoteError, NoteSigner
from gateway.errors import AuditVerifyError

# c2sp.org/tlog-checkpoint: the example checkpoint (its key is not published).
SPEC_TEXT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_NOTE = (
    SPEC_TEXT + "\n— example.com/behind-the-sofa "
    "Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)
SPEC_ROOT = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")

ORIGIN = "llmos.example/audit"
ROOT = hashlib.sha256(b"root").digest()
B64_ROOT = base64.b64encode(ROOT).decode()


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


def test_errors_are_audit_verify_errors() -> None:
    assert issubclass(CheckpointError, AuditVerifyError)


def test_spec_example_text() -> None:
    checkpoint = Checkpoint("example.com/behind-the-sofa", 20852163, SPEC_ROOT)
    assert checkpoint.to_text() == SPEC_TEXT
    assert Checkpoint.parse(SPEC_TEXT) == checkpoint


def test_spec_example_note_is_well_formed(signer: NoteSigner) -> None:
    with pytest.raises(NoteError, match="no signature by a known key"):
        verify_checkpoint(SPEC_NOTE, [signer.verifier()], origin="example.com/behind-the-sofa")


def test_extensions_round_trip() -> None:
    checkpoint = Checkpoint(ORIGIN, 0, ROOT, ("ext one", "— looks like a signature"))
    text = checkpoint.to_text()
    assert text == f"{ORIGIN}\n0\n{B64_ROOT}\next one\n— looks like a signature\n"
    assert Checkpoint.parse(text) == checkpoint


def test_largest_tree_size() -> None:
    text = f"{ORIGIN}\n{MAX_TREE_SIZE}\n{B64_ROOT}\n"
    assert Checkpoint.parse(text).size == 2**64 - 1
    assert Checkpoint.parse(text).to_text() == text


def body(origin: str = ORIGIN, size: str = "5", root: str = B64_ROOT, *extra: str) -> str:
    return "".join(f"{line}\n" for line in (origin, size, root, *extra))


MALFORMED = {
    "no final newline": body()[:-1],
    "two lines": f"{ORIGIN}\n5\n",
    "empty": "",
    "only newline": "\n",
    "empty origin": body(origin=""),
    "control in origin": body(origin="a\x01b"),
    "tab in origin": body(origin="a\tb"),
    "CRLF": body().replace("\n", "\r\n"),
    "leading zero": body(size="05"),
    "double zero": body(size="00"),
    "plus sign": body(size="+5"),
    "minus zero": body(size="-0"),
    "negative": body(size="-1"),
    "space before size": body(size=" 5"),
    "space after size": body(size="5 "),
    "underscore": body(size="1_000"),
    "hex size": body(size="0x10"),
    "arabic digit": body(size="\u0665"),
    "fullwidth digit": body(size="\uff15"),
    "empty size": body(size=""),
    "2**64": body(size=str(2**64)),
    "huge size": body(size="9" * 5000),
    "root not base64": body(root="not base64!"),
    "root unpadded": body(root=B64_ROOT.rstrip("=")),
    "root urlsafe": body(root=base64.urlsafe_b64encode(b"\xff" * 32).decode()),
    "root non-canonical": body(root=B64_ROOT[:-2] + chr(ord(B64_ROOT[-2]) + 1) + "="),
    "root 31 bytes": body(root=base64.b64encode(ROOT[:31]).decode()),
    "root 33 bytes": body(root=base64.b64encode(ROOT + b"\0").decode()),
    "root empty": body(root=""),
    "root hex": body(root=ROOT.hex()),
    "empty extension": body(ORIGIN, "5", B64_ROOT, "ext", ""),
    "blank line then extension": body(ORIGIN, "5", B64_ROOT, "", "ext"),
    "control in extension": body(ORIGIN, "5", B64_ROOT, "e\x00xt"),
    "lone surrogate": body(origin="\ud800"),
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_checkpoints_rejected(text: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(text)


def test_non_canonical_root_differs_only_in_padding_bits() -> None:
    bad = MALFORMED["root non-canonical"].split("\n")[2]
    assert base64.b64decode(bad) == ROOT


def test_parse_needs_a_str() -> None:
    with pytest.raises(CheckpointError, match="must be a str"):
        Checkpoint.parse(body().encode())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": ""},
        {"origin": "two\nlines"},
        {"size": -1},
        {"size": 2**64},
        {"size": True},
        {"size": 1.0},
        {"root_hash": ROOT[:31]},
        {"root_hash": B64_ROOT},
        {"extensions": ("",)},
        {"extensions": ("a\nb",)},
        {"extensions": "abc"},
        {"extensions": (1,)},
    ],
)
def test_constructor_validates(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"origin": ORIGIN, "size": 1, "root_hash": ROOT, **kwargs}
    with pytest.raises(CheckpointError):
        Checkpoint(**fields)  # type: ignore[arg-type]


def test_extensions_become_a_tuple() -> None:
    assert Checkpoint(ORIGIN, 1, ROOT, ["x"]).extensions == ("x",)  # type: ignore[arg-type]


# ---- signed checkpoints ---------------------------------------------------------------------


def test_sign_and_verify(signer: NoteSigner) -> None:
    checkpoint = Checkpoint(ORIGIN, 42, ROOT)
    signed = sign_checkpoint(checkpoint, signer)
    assert signed.decode().startswith(checkpoint.to_text() + "\n— " + ORIGIN + " ")
    assert verify_checkpoint(signed, [signer.verifier()], origin=ORIGIN) == checkpoint


def test_signature_line_carries_the_key_id(signer: NoteSigner) -> None:
    signed = sign_checkpoint(Checkpoint(ORIGIN, 1, ROOT), signer).decode()
    line = signed.rstrip("\n").rsplit("\n", 1)[1]
    raw = base64.b64decode(line.split(" ")[2])
    assert int.from_bytes(raw[:4], "big") == signer.key_id
    assert len(raw) == 4 + 64


def test_signing_is_deterministic() -> None:
    # Ed25519 is deterministic: Go's PeterNeumann key over this text gives this exact note.
    peter = NoteSigner.from_key_string(
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    )
    checkpoint = Checkpoint("PeterNeumann", 3, bytes(32))
    signed = sign_checkpoint(checkpoint, peter)
    assert signed == sign_checkpoint(checkpoint, peter)
    assert signed == note.sign(checkpoint.to_text(), [peter])
    assert verify_checkpoint(signed, [peter.verifier()], origin="PeterNeumann") == checkpoint


def test_replayed_checkpoint_of_another_origin_rejected(signer: NoteSigner) -> None:
    # The same trusted key signed a checkpoint for another log: the origin check catches it.
    other = sign_checkpoint(Checkpoint("llmos.example/other", 7, ROOT), signer)
    with pytest.raises(CheckpointError, match=r"origin 'llmos\.example/other', not the expected"):
        verify_checkpoint(other, [signer.verifier()], origin=ORIGIN)


@pytest.mark.parametrize(
    ("old", "new"),
    [("\n42\n", "\n43\n"), (B64_ROOT, base64.b64encode(bytes(32)).decode()), (ORIGIN + "\n", ORIGIN + "x\n")],
    ids=["size", "root", "origin"],
)
def test_tampered_body_rejected(signer: NoteSigner, old: str, new: str) -> None:
    signed = sign_checkpoint(Checkpoint(ORIGIN, 42, ROOT), signer).decode()
    tampered = signed.replace(old, new, 1)
    assert tampered != signed
    with pytest.raises(NoteError, match="invalid signature"):
        verify_checkpoint(tampered, [signer.verifier()], origin=ORIGIN)


def test_wrong_key_rejected(signer: NoteSigner) -> None:
    impostor = NoteSigner.generate(ORIGIN)
    signed = sign_checkpoint(Checkpoint(ORIGIN, 1, ROOT), impostor)
    with pytest.raises(NoteError, match="no signature by a known key"):
        verify_checkpoint(signed, [signer.verifier()], origin=ORIGIN)


def test_key_rotation_keeps_old_checkpoints_verifiable() -> None:
    old, new = NoteSigner.generate(ORIGIN), NoteSigner.generate(ORIGIN)
    before = sign_checkpoint(Checkpoint(ORIGIN, 10, ROOT), old)
    after = sign_checkpoint(Checkpoint(ORIGIN, 20, ROOT), new)
    both = [new.verifier(), old.verifier()]
    assert verify_checkpoint(before, both, origin=ORIGIN).size == 10
    assert verify_checkpoint(after, both, origin=ORIGIN).size == 20
    with pytest.raises(NoteError):
        verify_checkpoint(before, [new.verifier()], origin=ORIGIN)


def test_cosigned_checkpoint_verifies_with_the_log_key_alone(signer: NoteSigner) -> None:
    witness = NoteSigner.generate("witness.example/w1")
    signed = note.sign(Checkpoint(ORIGIN, 9, ROOT).to_text(), [signer, witness])
    assert verify_checkpoint(signed, [signer.verifier()], origin=ORIGIN).size == 9


def test_signed_malformed_body_rejected(signer: NoteSigner) -> None:
    signed = note.sign(f"{ORIGIN}\n007\n{B64_ROOT}\n", [signer])
    with pytest.raises(CheckpointError, match="canonical decimal"):
        verify_checkpoint(signed, [signer.verifier()], origin=ORIGIN)


# ---- properties -----------------------------------------------------------------------------

LINE = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)


@given(LINE, st.integers(0, MAX_TREE_SIZE), st.binary(min_size=32, max_size=32), st.lists(LINE, max_size=3))
def test_text_round_trips(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    checkpoint = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse(checkpoint.to_text()) == checkpoint


@given(st.text(max_size=300))
def test_parse_arbitrary_text_raises_only_checkpoint_error(text: str) -> None:
    with contextlib.suppress(CheckpointError):
        Checkpoint.parse(text)


@given(st.lists(st.sampled_from([ORIGIN, "", "0", "5", "05", B64_ROOT, "=", "x y", "\x00"]), max_size=6))
def test_parse_line_soup_raises_only_checkpoint_error(lines: list[str]) -> None:
    with contextlib.suppress(CheckpointError):
        Checkpoint.parse("\n".join(lines) + "\n")


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_verify_arbitrary_input_raises_only_note_or_checkpoint_error(msg: bytes | str) -> None:
    verifier = NoteSigner.from_key_string(
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    ).verifier()
    with contextlib.suppress(NoteError, CheckpointError):
        verify_checkpoint(msg, [verifier], origin=ORIGIN)
