"""RFC 9162 (RFC 6962) Merkle trees over SHA-256, pure: hashes, proofs, verification.

    leaf_hash(data)          SHA-256(0x00 || data)
    node_hash(left, right)   SHA-256(0x01 || left || right)
    root(leaf_hashes)        MTH(D[n]); the empty tree's root is SHA-256(b"") (:data:`EMPTY_ROOT`)

Proofs are built (RFC 9162 2.1.3.1 PATH, 2.1.4.1 PROOF/SUBPROOF) against a :class:`SubtreeSource`,
so the store can serve the few subtree roots a proof needs without reading every leaf;
:class:`ListSource` serves them from a list of leaf hashes. Proofs are checked by the iterative
algorithms of RFC 9162 2.1.3.2 and 2.1.4.2; every way a check can fail, malformed input included,
raises :class:`MerkleProofError` and nothing else. :class:`CompactRange` keeps the O(log n)
right edge of a growing tree, so the log can compute each new root without rereading leaves.

Hashes are 32-byte ``bytes``; leaf indices and tree sizes are ``int`` in [0, 2**64).
Misusing the proof *builders* (an index past the end, a source that breaks its contract) is a
programming error and raises ``ValueError``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from gateway.errors import AuditVerifyError

HASH_SIZE = 32
MAX_TREE_SIZE = 2**64 - 1  # RFC 9162 tree sizes are uint64
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class MerkleProofError(AuditVerifyError):
    """An inclusion or consistency proof did not verify, or its inputs were malformed."""


def leaf_hash(data: bytes) -> bytes:
    """The hash of one leaf: SHA-256(0x00 || data)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n`` >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the given leaf hashes, straight from the RFC's definition.

    O(n) hashing; for a growing log use :class:`CompactRange` instead.
    """
    if not leaf_hashes:
        return EMPTY_ROOT
    return _mth(leaf_hashes, 0, len(leaf_hashes))


def _mth(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    # Recursion depth is log2(end - start): the split always halves or better.
    if end - start == 1:
        return leaves[start]
    k = _split(end - start)
    return node_hash(_mth(leaves, start, start + k), _mth(leaves, start + k, end))


# --------------------------------------------------------------------------------------------
# Subtree sources and proof generation


class SubtreeSource(Protocol):
    """Serves roots of aligned perfect subtrees of one tree.

    ``source(start, end)`` is the root of leaves ``[start, end)``, where ``end - start`` is a
    power of two and ``start`` is a multiple of it. Such a subtree never changes once the tree
    has grown past ``end``, so a store may persist or cache these nodes forever. The proof
    builders only ask for ranges inside the tree whose proof they build.
    """

    def __call__(self, start: int, end: int) -> bytes: ...


def _is_aligned(start: int, end: int) -> bool:
    width = end - start
    return 0 <= start < end and width & (width - 1) == 0 and start % width == 0


class ListSource:
    """A :class:`SubtreeSource` over an in-memory list of leaf hashes, memoising each node.

    For tests and small trees: a proof costs O(log n) lookups once the nodes it needs are cached,
    and building all of them costs O(n) hashes in total.
    """

    __slots__ = ("_leaves", "_memo")

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self._leaves: tuple[bytes, ...] = tuple(leaf_hashes)
        self._memo: dict[tuple[int, int], bytes] = {}

    @property
    def size(self) -> int:
        return len(self._leaves)

    def root(self) -> bytes:
        """The root of the whole list."""
        return _range_root(self, 0, len(self._leaves))

    def __call__(self, start: int, end: int) -> bytes:
        if not _is_aligned(start, end) or end > len(self._leaves):
            raise ValueError(f"[{start}, {end}) is not an aligned perfect subtree of {self.size} leaves")
        if end - start == 1:
            return self._leaves[start]
        cached = self._memo.get((start, end))
        if cached is None:
            middle = (start + end) // 2
            cached = node_hash(self(start, middle), self(middle, end))  # depth log2(end - start)
            self._memo[(start, end)] = cached
        return cached


def _range_root(source: SubtreeSource, start: int, end: int) -> bytes:
    """MTH(D[start:end]) where ``start`` is a multiple of a power of two >= ``end - start``.

    Such a range is a run of aligned perfect subtrees of decreasing size (one per set bit of
    ``end - start``); its root folds them together from the right, as the RFC's split does.
    """
    if start == end:
        return EMPTY_ROOT
    pieces: list[bytes] = []
    remaining = end - start
    while remaining:
        width = 1 << (remaining.bit_length() - 1)
        pieces.append(_fetch(source, start, start + width))
        start += width
        remaining -= width
    result = pieces.pop()
    while pieces:
        result = node_hash(pieces.pop(), result)
    return result


def _fetch(source: SubtreeSource, start: int, end: int) -> bytes:
    value = source(start, end)
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ValueError(f"the subtree source returned a bad hash for [{start}, {end})")
    return value


def inclusion_proof(index: int, size: int, subtree: SubtreeSource) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 2.1.3.1): sibling hashes from the leaf up to the root."""
    if not 0 <= index < size <= MAX_TREE_SIZE:
        raise ValueError(f"no leaf {index} in a tree of size {size}")
    siblings: list[bytes] = []  # collected root-first, returned leaf-first
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            siblings.append(_range_root(subtree, lo + k, hi))
            hi = lo + k
        else:
            siblings.append(_range_root(subtree, lo, lo + k))
            lo += k
    siblings.reverse()
    return siblings


def consistency_proof(old_size: int, new_size: int, subtree: SubtreeSource) -> list[bytes]:
    """PROOF(old_size, D[new_size]) (RFC 9162 2.1.4.1); empty when the sizes are equal.

    ``old_size`` must be at least 1: nothing is proved about the empty tree.
    """
    if not 0 < old_size <= new_size <= MAX_TREE_SIZE:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    siblings: list[bytes] = []  # collected root-first
    lo, hi, m, whole = 0, new_size, old_size, True  # SUBPROOF(m, D[lo:hi], whole)
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            siblings.append(_range_root(subtree, lo + k, hi))
            hi = lo + k
        else:
            siblings.append(_range_root(subtree, lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    proof = [] if whole else [_range_root(subtree, lo, hi)]
    proof.extend(reversed(siblings))
    return proof


# --------------------------------------------------------------------------------------------
# Verification


def inclusion_proof_size(index: int, size: int) -> int:
    """How many hashes PATH(index, D[size]) has (0 <= index < size)."""
    inner = (index ^ (size - 1)).bit_length()  # levels below the point where index leaves the edge
    return inner + (index >> inner).bit_count()


def consistency_proof_size(old_size: int, new_size: int) -> int:
    """How many hashes PROOF(old_size, D[new_size]) has (0 < old_size <= new_size)."""
    if old_size == new_size:
        return 0
    inner = ((old_size - 1) ^ (new_size - 1)).bit_length()
    shift = (old_size & -old_size).bit_length() - 1  # the old tree's smallest perfect subtree
    seed = 0 if old_size == 1 << shift else 1
    return seed + inner - shift + ((old_size - 1) >> inner).bit_count()


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``.

    RFC 9162 2.1.3.2. Returns None on success; raises :class:`MerkleProofError` otherwise.
    The proof binds the leaf to ``root``; ``size`` only fixes the proof's shape, so callers
    must take ``size`` and ``root`` from the same signed checkpoint.
    """
    _check_size("tree size", size)
    _check_size("leaf index", index)
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root", root)
    path = _check_proof(proof)
    if index >= size:
        raise MerkleProofError(f"leaf index {index} is out of range for a tree of size {size}")
    want = inclusion_proof_size(index, size)
    if len(path) != want:
        raise MerkleProofError(
            f"wrong inclusion proof length: got {len(path)} hashes, leaf {index} of {size} needs {want}"
        )
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            raise MerkleProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:  # fn == sn: skip levels where the right edge has no sibling
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleProofError("inclusion proof is shorter than the path to the root")
    if r != root:
        raise MerkleProofError(
            f"inclusion proof for leaf {index} does not lead to the root (tree size {size})"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` with ``new_root`` extends the one of ``old_size``.

    RFC 9162 2.1.4.2 for 0 < old_size < new_size. Equal sizes need an empty proof and equal
    roots (for size 0, the empty tree's root); otherwise both roots must be 32-byte hashes. A
    proof from the empty tree to a larger one is refused as meaningless: every tree extends the
    empty tree. Raises :class:`MerkleProofError`.
    """
    _check_size("old tree size", old_size)
    _check_size("new tree size", new_size)
    path = _check_proof(proof)
    if old_size > new_size:
        raise MerkleProofError(f"old tree size {old_size} is larger than new tree size {new_size}")
    if old_size == new_size:
        # As transparency-dev/merkle (and its vectors) do: equal trees need an empty proof and the
        # same root; the roots are compared, not parsed as hashes.
        if path:
            raise MerkleProofError(
                f"equal tree sizes ({old_size}) need an empty proof, got {len(path)} hashes"
            )
        if not isinstance(old_root, bytes) or not isinstance(new_root, bytes) or old_root != new_root:
            raise MerkleProofError(f"roots differ for trees of equal size {old_size}")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise MerkleProofError("the root of a tree of size 0 must be SHA-256 of the empty string")
        return
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    if old_size == 0:
        raise MerkleProofError("a consistency proof from the empty tree proves nothing (old tree size is 0)")
    want = consistency_proof_size(old_size, new_size)
    if len(path) != want:
        raise MerkleProofError(
            f"wrong consistency proof length: got {len(path)} hashes, "
            f"sizes {old_size} -> {new_size} need {want}"
        )
    if not path:
        raise MerkleProofError(f"empty consistency proof for sizes {old_size} -> {new_size}")
    if old_size & (old_size - 1) == 0:  # the old tree is a perfect subtree: its root seeds the walk
        path = [old_root, *path]
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise MerkleProofError("consistency proof is longer than the path to the new root")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MerkleProofError("consistency proof is shorter than the path to the new root")
    if fr != old_root:
        raise MerkleProofError(f"consistency proof does not lead to the old root (size {old_size})")
    if sr != new_root:
        raise MerkleProofError(f"consistency proof does not lead to the new root (size {new_size})")


def _check_size(what: str, value: object) -> None:
    if type(value) is not int or not 0 <= value <= MAX_TREE_SIZE:
        raise MerkleProofError(f"{what} must be an integer in [0, 2**64), got {_describe(value)}")


def _check_hash(what: str, value: object) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise MerkleProofError(f"{what} must be {HASH_SIZE} bytes, got {_describe(value)}")


def _check_proof(proof: object) -> list[bytes]:
    if not isinstance(proof, list | tuple):
        raise MerkleProofError(f"proof must be a list of hashes, got {_describe(proof)}")
    for i, item in enumerate(proof):
        _check_hash(f"proof hash [{i}]", item)
    return list(proof)


def _describe(value: object) -> str:
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    if type(value) is int:
        return str(value)
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# The right edge of a growing tree


class CompactRange:
    """The roots of the perfect subtrees that make up leaves ``[0, size)``, largest first.

    One root per set bit of ``size``: O(log n) state from which :meth:`root` is computed in
    O(log n) hashes, and :meth:`append` costs amortised O(1) hashes. Serialise with
    :meth:`nodes` and restore with :meth:`from_nodes`.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_nodes(cls, nodes: Sequence[tuple[int, bytes]]) -> CompactRange:
        """Rebuild from :meth:`nodes` output; ``ValueError`` if it cannot be a compact range."""
        state = cls()
        previous_level = 64
        for level, value in nodes:
            if type(level) is not int or not 0 <= level < previous_level:
                raise ValueError("compact range levels must be distinct integers in [0, 64), largest first")
            if not isinstance(value, bytes) or len(value) != HASH_SIZE:
                raise ValueError(f"compact range hashes must be {HASH_SIZE} bytes")
            state._size += 1 << level
            state._hashes.append(value)
            previous_level = level
        return state

    @property
    def size(self) -> int:
        return self._size

    def nodes(self) -> list[tuple[int, bytes]]:
        """``(level, root)`` of each perfect subtree, largest first; level L covers 2**L leaves."""
        levels = [bit for bit in range(self._size.bit_length() - 1, -1, -1) if self._size >> bit & 1]
        return list(zip(levels, self._hashes, strict=True))

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash (not leaf data: see :func:`leaf_hash`) at index ``size``."""
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash must be {HASH_SIZE} bytes")
        if self._size >= MAX_TREE_SIZE:
            raise ValueError("the tree is full")
        merged, size = leaf, self._size
        while size & 1:  # each trailing one bit is a perfect subtree of the new leaf's size
            merged = node_hash(self._hashes.pop(), merged)
            size >>= 1
        self._hashes.append(merged)
        self._size += 1

    def append_nodes(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """:meth:`append`, returning the aligned tree nodes it completes as ``(level, index,
        hash)``: the leaf itself, then each parent whose right child it completes (what a store
        keeps to answer proofs without recomputing them)."""
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash must be {HASH_SIZE} bytes")
        if self._size >= MAX_TREE_SIZE:
            raise ValueError("the tree is full")
        index, level, merged = self._size, 0, leaf
        nodes = [(0, index, leaf)]
        while index & 1:
            merged = node_hash(self._hashes.pop(), merged)
            level, index = level + 1, index >> 1
            nodes.append((level, index, merged))
        self._hashes.append(merged)
        self._size += 1
        return nodes

    def root(self) -> bytes:
        """MTH of leaves ``[0, size)``."""
        if not self._hashes:
            return EMPTY_ROOT
        result = self._hashes[-1]
        for value in reversed(self._hashes[:-1]):
            result = node_hash(value, result)
        return result

    def copy(self) -> CompactRange:
        other = CompactRange()
        other._size = self._size
        other._hashes = list(self._hashes)
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()[:16]}...)"
