"""gateway.audit.merkle: the transparency-dev vectors, the RFC 6962 reference tree, properties."""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    ListSource,
    MerkleProofError,
    consistency_proof,
    consistency_proof_size,
    inclusion_proof,
    inclusion_proof_size,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from gateway.errors import AuditVerifyError

VECTORS = Path(__file__).parent / "testdata" / "merkle"
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)

# Vectors whose wantErr we knowingly do not follow, with the reason.
# Vectors whose expectation we deliberately do not follow (none: every happy path verifies).
DEVIATIONS: dict[str, str] = {}

# RFC 6962's reference tree (certificate-transparency's merkle_tree_test): the vectors use it.
REFERENCE_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
REFERENCE_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


# --------------------------------------------------------------------------------------------
# Vector files


@dataclass(frozen=True)
class InclusionVector:
    name: str
    leaf_index: int
    tree_size: int
    root: bytes
    leaf_hash: bytes
    proof: list[bytes]
    want_err: bool


@dataclass(frozen=True)
class ConsistencyVector:
    name: str
    size1: int
    size2: int
    root1: bytes
    root2: bytes
    proof: list[bytes]
    want_err: bool


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _load(kind: str) -> list[tuple[str, dict[str, object]]]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [(path.relative_to(VECTORS).as_posix(), json.loads(path.read_text())) for path in files]


def _proof(raw: object) -> list[bytes]:
    assert raw is None or isinstance(raw, list)
    return [_b64(h) for h in raw or []]


def _inclusion_vectors() -> list[InclusionVector]:
    return [
        InclusionVector(
            name,
            int(raw["leafIdx"]),  # type: ignore[call-overload]
            int(raw["treeSize"]),  # type: ignore[call-overload]
            _b64(str(raw["root"])),
            _b64(str(raw["leafHash"])),
            _proof(raw["proof"]),
            raw["wantErr"] is True,
        )
        for name, raw in _load("inclusion")
    ]


def _consistency_vectors() -> list[ConsistencyVector]:
    return [
        ConsistencyVector(
            name,
            int(raw["size1"]),  # type: ignore[call-overload]
            int(raw["size2"]),  # type: ignore[call-overload]
            _b64(str(raw["root1"])),
            _b64(str(raw["root2"])),
            _proof(raw["proof"]),
            raw["wantErr"] is True,
        )
        for name, raw in _load("consistency")
    ]


INCLUSION_VECTORS = _inclusion_vectors()
CONSISTENCY_VECTORS = _consistency_vectors()


def test_all_vector_files_are_loaded() -> None:
    assert (VECTORS / "LICENSE").is_file()
    assert len(INCLUSION_VECTORS) == 98
    assert len(CONSISTENCY_VECTORS) == 98
    assert sum(not v.want_err for v in INCLUSION_VECTORS) == 6
    assert sum(not v.want_err for v in CONSISTENCY_VECTORS) == 6
    assert set(DEVIATIONS) <= {v.name for v in INCLUSION_VECTORS} | {v.name for v in CONSISTENCY_VECTORS}


@pytest.mark.parametrize("vector", INCLUSION_VECTORS, ids=lambda v: v.name)
def test_inclusion_vector(vector: InclusionVector) -> None:
    args = (vector.leaf_hash, vector.leaf_index, vector.tree_size, vector.proof, vector.root)
    if vector.want_err or vector.name in DEVIATIONS:
        with pytest.raises(MerkleProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("vector", CONSISTENCY_VECTORS, ids=lambda v: v.name)
def test_consistency_vector(vector: ConsistencyVector) -> None:
    args = (vector.size1, vector.size2, vector.root1, vector.root2, vector.proof)
    if vector.want_err or vector.name in DEVIATIONS:
        with pytest.raises(MerkleProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_equal_sizes_need_equal_roots_and_an_empty_proof() -> None:
    some_root = bytes.fromhex(REFERENCE_ROOTS[1])
    verify_consistency(1, 1, some_root, some_root, [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(1, 1, b"don't care 2", b"don't care 2", [])  # compared, not parsed (vectors)
    with pytest.raises(MerkleProofError, match="roots differ"):
        verify_consistency(1, 1, some_root, bytes(32), [])
    with pytest.raises(MerkleProofError, match="empty proof"):
        verify_consistency(1, 1, some_root, some_root, [some_root])
    with pytest.raises(MerkleProofError, match="size 0"):
        verify_consistency(0, 0, some_root, some_root, [])


@pytest.mark.parametrize("vector", [v for v in INCLUSION_VECTORS if not v.want_err], ids=lambda v: v.name)
def test_generated_inclusion_proofs_match_the_vectors(vector: InclusionVector) -> None:
    source = ListSource([leaf_hash(d) for d in REFERENCE_LEAVES])
    assert inclusion_proof(vector.leaf_index, vector.tree_size, source) == vector.proof


@pytest.mark.parametrize(
    "vector",
    [v for v in CONSISTENCY_VECTORS if not v.want_err and v.name not in DEVIATIONS],
    ids=lambda v: v.name,
)
def test_generated_consistency_proofs_match_the_vectors(vector: ConsistencyVector) -> None:
    source = ListSource([leaf_hash(d) for d in REFERENCE_LEAVES])
    assert consistency_proof(vector.size1, vector.size2, source) == vector.proof


# --------------------------------------------------------------------------------------------
# Hashes and roots


def test_reference_tree_roots() -> None:
    leaves = [leaf_hash(d) for d in REFERENCE_LEAVES]
    assert EMPTY_ROOT.hex() == REFERENCE_ROOTS[0]
    for size, want in enumerate(REFERENCE_ROOTS):
        assert root(leaves[:size]).hex() == want


def test_hashes_are_domain_separated() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert len(a) == HASH_SIZE
    assert leaf_hash(b"") != EMPTY_ROOT
    assert node_hash(a, b) != leaf_hash(a + b)
    assert node_hash(a, b) != node_hash(b, a)
    assert root([a]) == a
    assert root([a, b]) == node_hash(a, b)


def test_merkle_proof_error_is_an_audit_verify_error() -> None:
    assert issubclass(MerkleProofError, AuditVerifyError)


# --------------------------------------------------------------------------------------------
# Exhaustive small trees


def _ceil_log2(n: int) -> int:
    return (n - 1).bit_length()


def _leaves(n: int, seed: bytes = b"") -> list[bytes]:
    return [leaf_hash(seed + i.to_bytes(4, "big")) for i in range(n)]


SMALL = 64
SMALL_LEAVES = _leaves(SMALL)
SMALL_ROOTS = [root(SMALL_LEAVES[:n]) for n in range(SMALL + 1)]


def test_every_proof_in_small_trees() -> None:
    # One source for all sizes: the aligned subtrees a proof asks for never change as the tree grows.
    source = ListSource(SMALL_LEAVES)
    for n in range(1, SMALL + 1):
        for i in range(n):
            proof = inclusion_proof(i, n, source)
            assert len(proof) == inclusion_proof_size(i, n) <= _ceil_log2(n)
            verify_inclusion(SMALL_LEAVES[i], i, n, proof, SMALL_ROOTS[n])
        for m in range(1, n + 1):
            proof = consistency_proof(m, n, source)
            assert len(proof) == consistency_proof_size(m, n) <= _ceil_log2(n) + 1
            verify_consistency(m, n, SMALL_ROOTS[m], SMALL_ROOTS[n], proof)


class CountingSource:
    def __init__(self, leaves: list[bytes]) -> None:
        self.inner = ListSource(leaves)
        self.calls = 0

    def __call__(self, start: int, end: int) -> bytes:
        self.calls += 1
        return self.inner(start, end)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 65, 300, 1000])
def test_proofs_need_logarithmically_many_subtrees(n: int) -> None:
    source = CountingSource(_leaves(n))
    for i in {0, n // 3, n - 1}:
        source.calls = 0
        inclusion_proof(i, n, source)
        assert source.calls <= 2 * _ceil_log2(n)
    for m in {1, n // 3 or 1, n - 1 or 1}:
        source.calls = 0
        consistency_proof(m, n, source)
        assert source.calls <= 2 * _ceil_log2(n) + 1


def test_builders_refuse_bad_arguments() -> None:
    source = ListSource(SMALL_LEAVES[:5])
    for index, size in [(5, 5), (-1, 5), (0, 0)]:
        with pytest.raises(ValueError):
            inclusion_proof(index, size, source)
    for old, new in [(0, 5), (6, 5), (-1, 5)]:
        with pytest.raises(ValueError):
            consistency_proof(old, new, source)
    assert consistency_proof(5, 5, source) == []
    for start, end in [(0, 3), (1, 3), (4, 6), (0, 8), (3, 3)]:
        with pytest.raises(ValueError):
            source(start, end)
    with pytest.raises(ValueError, match="bad hash"):
        inclusion_proof(0, 2, lambda start, end: b"short")


# --------------------------------------------------------------------------------------------
# Properties of random trees


def _path_shape(index: int, size: int) -> tuple[bool, ...]:
    """Top-down: is each sibling on PATH(index, D[size]) on the right? (RFC 9162 2.1.3.1)"""
    sides = []
    while size > 1:
        k = 1 << ((size - 1).bit_length() - 1)
        if index < k:
            sides.append(True)
            size = k
        else:
            sides.append(False)
            index, size = index - k, size - k
    return tuple(sides)


def _consistency_shape(m: int, n: int) -> tuple[bool, tuple[bool, ...]]:
    """(is the old root the seed, sides of the siblings) of PROOF(m, D[n]) (RFC 9162 2.1.4.1)."""
    sides, whole = [], True
    while m != n:
        k = 1 << ((n - 1).bit_length() - 1)
        if m <= k:
            sides.append(True)
            n = k
        else:
            sides.append(False)
            m, n, whole = m - k, n - k, False
    return whole, tuple(sides)


def _flip(value: bytes, bit: int) -> bytes:
    flipped = bytearray(value)
    flipped[bit // 8 % len(value)] ^= 1 << (bit % 8)
    return bytes(flipped)


def _inclusion_refused(leaf: bytes, index: int, size: int, proof: list[bytes], tree_root: bytes) -> bool:
    try:
        verify_inclusion(leaf, index, size, proof, tree_root)
    except MerkleProofError:
        return True
    return False


def _consistency_refused(m: int, n: int, root1: bytes, root2: bytes, proof: list[bytes]) -> bool:
    try:
        verify_consistency(m, n, root1, root2, proof)
    except MerkleProofError:
        return True
    return False


@PROPERTY_SETTINGS
@given(size=st.integers(1, 300), seed=st.binary(max_size=8), data=st.data())
def test_inclusion_proofs_verify_and_mutations_fail(size: int, seed: bytes, data: st.DataObject) -> None:
    leaves = _leaves(size, seed)
    source, tree_root = ListSource(leaves), root(leaves)
    indices = data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=4, unique=True))
    for index in indices:
        proof = inclusion_proof(index, size, source)
        assert len(proof) <= _ceil_log2(size)
        leaf = leaves[index]
        verify_inclusion(leaf, index, size, proof, tree_root)

        for j in range(len(proof)):
            bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1))
            bad = [*proof[:j], _flip(proof[j], bit), *proof[j + 1 :]]
            assert _inclusion_refused(leaf, index, size, bad, tree_root)
        bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1))
        assert _inclusion_refused(leaf, index, size, proof, _flip(tree_root, bit))
        assert _inclusion_refused(_flip(leaf, bit), index, size, proof, tree_root)
        assert _inclusion_refused(leaf, index, size, [*proof, leaf], tree_root)
        if proof:
            assert _inclusion_refused(leaf, index, size, proof[1:], tree_root)
            assert _inclusion_refused(leaf, index, size, proof[:-1], tree_root)

        other_index = data.draw(st.integers(0, size + 2).filter(lambda i, index=index: i != index))
        assert _inclusion_refused(leaf, other_index, size, proof, tree_root)
        # The size only fixes the proof's shape; the root is what binds the leaf. A size that gives
        # the same shape (index 0 of 5 or of 6 leaves) verifies against the same root, so
        # checkpoints must sign size and root together.
        other_size = data.draw(st.integers(0, 2 * size + 2).filter(lambda s: s != size))
        same_shape = index < other_size and _path_shape(index, other_size) == _path_shape(index, size)
        refused = _inclusion_refused(leaf, index, other_size, proof, tree_root)
        assert refused != same_shape


@PROPERTY_SETTINGS
@given(new_size=st.integers(1, 300), seed=st.binary(max_size=8), data=st.data())
def test_consistency_proofs_verify_and_mutations_fail(
    new_size: int, seed: bytes, data: st.DataObject
) -> None:
    leaves = _leaves(new_size, seed)
    old_size = data.draw(st.integers(1, new_size))
    proof = consistency_proof(old_size, new_size, ListSource(leaves))
    old_root, new_root = root(leaves[:old_size]), root(leaves)
    assert len(proof) <= _ceil_log2(new_size) + 1
    verify_consistency(old_size, new_size, old_root, new_root, proof)

    for j in range(len(proof)):
        bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1))
        assert _consistency_refused(
            old_size, new_size, old_root, new_root, [*proof[:j], _flip(proof[j], bit), *proof[j + 1 :]]
        )
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1))
    assert _consistency_refused(old_size, new_size, _flip(old_root, bit), new_root, proof)
    assert _consistency_refused(old_size, new_size, old_root, _flip(new_root, bit), proof)
    assert _consistency_refused(old_size, new_size, old_root, new_root, [*proof, old_root])
    if proof:
        assert _consistency_refused(old_size, new_size, old_root, new_root, proof[1:])
        assert _consistency_refused(old_size, new_size, old_root, new_root, proof[:-1])
    if old_size < new_size:
        assert _consistency_refused(old_size, new_size, new_root, old_root, proof)

    # As with inclusion, sizes only fix the shape of the proof: same shape, same verdict.
    shape = _consistency_shape(old_size, new_size)
    other_old = data.draw(st.integers(0, new_size + 2).filter(lambda m: m != old_size))
    same = 0 < other_old <= new_size and _consistency_shape(other_old, new_size) == shape
    assert _consistency_refused(other_old, new_size, old_root, new_root, proof) != same
    other_new = data.draw(st.integers(0, 2 * new_size + 2).filter(lambda n: n != new_size))
    same = old_size <= other_new and _consistency_shape(old_size, other_new) == shape
    assert _consistency_refused(old_size, other_new, old_root, new_root, proof) != same


JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 2**65),
    st.sampled_from([2**64 - 1, 2**64, 1.0, "1"]),
    st.binary(max_size=40),
    st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE),
    st.text(max_size=4),
    st.lists(st.one_of(st.binary(min_size=31, max_size=33), st.none(), st.text(max_size=2)), max_size=4),
    st.tuples(st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE)),
)


@PROPERTY_SETTINGS
@given(args=st.tuples(JUNK, JUNK, JUNK, JUNK, JUNK))
def test_verifiers_raise_only_merkle_proof_error(args: tuple[object, object, object, object, object]) -> None:
    for verify in (verify_inclusion, verify_consistency):
        with contextlib.suppress(MerkleProofError):
            verify(*args)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((b"\0" * 32, 3, 3, [], b"\0" * 32), "out of range"),
        ((b"\0" * 32, 0, 2, [], b"\0" * 32), "wrong inclusion proof length"),
        ((b"\0" * 31, 0, 1, [], b"\0" * 32), "leaf hash must be 32 bytes"),
        ((b"\0" * 32, 0, 1, None, b"\0" * 32), "proof must be a list"),
        ((b"\0" * 32, True, 1, [], b"\0" * 32), "leaf index must be an integer"),
        ((b"\0" * 32, 0, 2**64, [], b"\0" * 32), "tree size must be an integer"),
        ((b"\0" * 32, 0, 1, [], b"\1" * 32), "does not lead to the root"),
    ],
)
def test_inclusion_failures_say_what_failed(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(MerkleProofError, match=message):
        verify_inclusion(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((2, 1, b"\0" * 32, b"\0" * 32, []), "larger than new tree size"),
        ((0, 1, EMPTY_ROOT, b"\0" * 32, []), "from the empty tree"),
        ((1, 2, b"\0" * 32, b"\0" * 32, []), "wrong consistency proof length"),
        ((1, 1, b"\0" * 32, b"\0" * 32, [b"\0" * 32]), "need an empty proof"),
        ((1, 1, b"\0" * 32, b"\1" * 32, []), "roots differ"),
        ((1, 2, b"\0" * 32, b"\0" * 32, [b"\0" * 32]), "new root"),
        ((3, 4, b"\0" * 32, b"\0" * 32, [b"\0" * 32] * 3), "old root"),
        ((1, 2, b"\0" * 32, b"\0" * 32, [b"\0" * 33]), r"proof hash \[0\] must be 32 bytes"),
    ],
)
def test_consistency_failures_say_what_failed(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(MerkleProofError, match=message):
        verify_consistency(*args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# CompactRange


def test_compact_range_matches_root_for_every_size() -> None:
    leaves = _leaves(200, b"compact")
    state = CompactRange()
    assert state.root() == EMPTY_ROOT
    assert state.nodes() == []
    for n, leaf in enumerate(leaves, start=1):
        state.append(leaf)
        assert state.size == n
        assert state.root() == root(leaves[:n])
        assert [level for level, _ in state.nodes()] == [b for b in range(8, -1, -1) if n >> b & 1]


@PROPERTY_SETTINGS
@given(data=st.lists(st.binary(max_size=16), max_size=200), cut=st.integers(0, 200))
def test_compact_range_round_trips_and_resumes(data: list[bytes], cut: int) -> None:
    leaves = [leaf_hash(d) for d in data]
    cut = min(cut, len(leaves))
    state = CompactRange()
    for leaf in leaves[:cut]:
        state.append(leaf)
    restored = CompactRange.from_nodes(state.nodes())
    assert restored == state
    assert restored.size == cut
    assert restored.root() == root(leaves[:cut])
    for leaf in leaves[cut:]:
        restored.append(leaf)
    assert restored.root() == root(leaves)
    assert restored.root() == ListSource(leaves).root()


def test_append_nodes_returns_every_aligned_node_it_completes() -> None:
    leaves = _leaves(70, b"nodes")
    state = CompactRange()
    stored: dict[tuple[int, int], bytes] = {}
    for index, leaf in enumerate(leaves):
        nodes = state.append_nodes(leaf)
        assert nodes[0] == (0, index, leaf)
        assert [level for level, _, _ in nodes] == list(range(len(nodes)))
        stored.update({(level, idx): value for level, idx, value in nodes})
    assert state.root() == root(leaves)
    # Every perfect subtree of the 70 leaves is there with its root, and nothing else.
    expected = {
        (level, idx): root(leaves[idx << level : (idx + 1) << level])
        for level in range(7)
        for idx in range(70 >> level)
    }
    assert stored == expected


def test_compact_range_refuses_bad_input() -> None:
    h = leaf_hash(b"x")
    for nodes in ([(0, h), (1, h)], [(1, h), (1, h)], [(-1, h)], [(64, h)], [(0, b"short")], [(True, h)]):
        with pytest.raises(ValueError):
            CompactRange.from_nodes(nodes)  # type: ignore[arg-type]
    state = CompactRange()
    with pytest.raises(ValueError):
        state.append(b"short")
    copy = state.copy()
    copy.append(h)
    assert state.size == 0
    assert copy.size == 1
    assert copy != state
