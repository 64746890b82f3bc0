"""RFC 6962 / RFC 9162 Merkle tree maths: hashing, roots, proofs and their verification.

Pure functions over bytes. A tree of ``size`` leaves is addressed by *complete
subtrees*: ``(level, index)`` covers the leaves ``[index * 2**level, (index + 1) *
2**level)`` and exists once the tree holds all of them. Proof generation takes a
``lookup(level, index) -> hash`` function for complete subtrees, so a store that
keeps them (the audit log does) answers any proof with O(log n) lookups;
:func:`inclusion_nodes` and :func:`consistency_nodes` list those lookups first so
they can be fetched in one query.

Verification follows RFC 9162 section 2.1.3.2 and 2.1.4.2 (the same algorithm as
transparency-dev/merkle) and raises :class:`ProofError` on any failure. Every hash
(leaf, root, proof element) must be exactly 32 bytes, and a consistency proof from
an empty tree is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from transfer.errors import IntegrityError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Lookup = Callable[[int, int], bytes]


class ProofError(IntegrityError):
    """A Merkle proof or hash failed verification."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly less than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """The root of the tree whose leaves have these hashes (the empty root for none)."""
    stack: list[tuple[int, bytes]] = []  # (height, hash) of the compact range so far
    for h in leaf_hashes:
        height = 0
        while stack and stack[-1][0] == height:
            h = node_hash(stack.pop()[1], h)
            height += 1
        stack.append((height, h))
    if not stack:
        return EMPTY_ROOT
    root = stack[-1][1]
    for _, h in reversed(stack[:-1]):
        root = node_hash(h, root)
    return root


class CompactRange:
    """The hashes of the complete subtrees that make up ``[0, size)``, for appending.

    ``hashes[i]`` is the subtree whose height is the i-th set bit of ``size``,
    from the highest bit (leftmost subtree) to the lowest.
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ValueError("a compact range needs one hash per set bit of its size")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return the complete subtrees ``(level, index, hash)`` it closed."""
        closed: list[tuple[int, int, bytes]] = []
        h = leaf
        level = 0
        index = self.size
        while (self.size >> level) & 1:
            h = node_hash(self.hashes.pop(), h)
            level += 1
            index >>= 1
            closed.append((level, index, h))
        self.hashes.append(h)
        self.size += 1
        return closed

    def push(self, leaf: bytes) -> None:
        """:meth:`append` without reporting the closed subtrees (for re-computation)."""
        h, size, hashes = leaf, self.size, self.hashes
        while size & 1:
            h = node_hash(hashes.pop(), h)
            size >>= 1
        hashes.append(h)
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        root = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            root = node_hash(h, root)
        return root

    def encode(self) -> bytes:
        return b"".join(self.hashes)

    @classmethod
    def decode(cls, size: int, blob: bytes) -> CompactRange:
        n = bin(size).count("1")
        if len(blob) != n * HASH_SIZE:
            raise IntegrityError("the stored compact range does not match the tree size")
        return cls(size, [blob[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(n)])


def range_hash(lookup: Lookup, start: int, end: int) -> bytes:
    """MTH of leaves ``[start, end)`` where ``start`` is aligned to a power of two >= the width.

    This is the shape of every node in a proof: it is split into complete
    subtrees, largest first, and folded from the right.
    """
    parts: list[bytes] = []
    pos = start
    while pos < end:
        level = (end - pos).bit_length() - 1
        while pos % (1 << level):
            level -= 1
        parts.append(lookup(level, pos >> level))
        pos += 1 << level
    h = parts[-1]
    for p in reversed(parts[:-1]):
        h = node_hash(p, h)
    return h


def root_from_lookup(lookup: Lookup, size: int) -> bytes:
    """The root of the first ``size`` leaves, from complete-subtree hashes."""
    if size == 0:
        return EMPTY_ROOT
    return range_hash(lookup, 0, size)


def inclusion_proof(lookup: Lookup, index: int, size: int) -> list[bytes]:
    """RFC 9162 ``PATH(index, D[0:size])``."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    proof: list[bytes] = []
    lo, hi, m = 0, size, index
    while hi - lo > 1:
        k = _largest_power_of_two_below(hi - lo)
        if m < k:
            proof.append(range_hash(lookup, lo + k, hi))
            hi = lo + k
        else:
            proof.append(range_hash(lookup, lo, lo + k))
            lo, m = lo + k, m - k
    proof.reverse()
    return proof


def consistency_proof(lookup: Lookup, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 ``PROOF(old_size, D[0:new_size])`` (empty when the sizes are equal)."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    proof: list[bytes] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                proof.append(range_hash(lookup, lo, hi))
            break
        k = _largest_power_of_two_below(n)
        if m <= k:
            proof.append(range_hash(lookup, lo + k, hi))
            hi = lo + k
        else:
            proof.append(range_hash(lookup, lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    proof.reverse()
    return proof


def _recorded(run: Callable[[Lookup], object]) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []

    def record(level: int, index: int) -> bytes:
        seen.append((level, index))
        return bytes(HASH_SIZE)

    run(record)
    return sorted(set(seen))


def inclusion_nodes(index: int, size: int) -> list[tuple[int, int]]:
    """The complete subtrees :func:`inclusion_proof` will look up."""
    return _recorded(lambda lk: inclusion_proof(lk, index, size))


def consistency_nodes(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The complete subtrees :func:`consistency_proof` will look up."""
    return _recorded(lambda lk: consistency_proof(lk, old_size, new_size))


def root_nodes(size: int) -> list[tuple[int, int]]:
    """The complete subtrees :func:`root_from_lookup` will look up."""
    return _recorded(lambda lk: root_from_lookup(lk, size))


# ------------------------------------------------------------------ verification


def _check_hash(name: str, h: bytes) -> None:
    if len(h) != HASH_SIZE:
        raise ProofError(f"{name} is {len(h)} bytes long; a SHA-256 hash is {HASH_SIZE}")


def _check_proof(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        _check_hash(f"proof element {i}", h)


def _decomp(index: int, size: int) -> tuple[int, int]:
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(seed, h) if (index >> i) & 1 == 0 else node_hash(h, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if (index >> i) & 1 == 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof; raise :class:`ProofError` if malformed."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below the tree size {size}")
    _check_hash("the leaf hash", leaf)
    _check_proof(proof)
    inner, border = _decomp(index, size)
    if len(proof) != inner + border:
        raise ProofError(
            f"the inclusion proof has {len(proof)} hashes; "
            f"leaf {index} of a tree of size {size} needs {inner + border}"
        )
    res = _chain_inner(leaf, proof[:inner], index)
    return _chain_border_right(res, proof[inner:])


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` is leaf ``index`` of the tree ``(size, root)``, or raise."""
    _check_hash("the root hash", root)
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise ProofError(
            f"the inclusion proof for leaf {index} does not lead to the root of size {size}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree ``(old_size, old_root)`` is a prefix of ``(new_size, new_root)``."""
    _check_hash("the old root hash", old_root)
    _check_hash("the new root hash", new_root)
    _check_proof(proof)
    if old_size < 0 or new_size < old_size:
        raise ProofError(f"the tree size went down from {old_size} to {new_size}")
    if old_size == 0:
        raise ProofError("a consistency proof from an empty tree proves nothing and is refused")
    if old_size == new_size:
        if proof:
            raise ProofError("equal tree sizes need an empty consistency proof")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same tree size {old_size}")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    inner, border = _decomp(old_size - 1, new_size)
    shift = (old_size & -old_size).bit_length() - 1
    inner -= shift
    if old_size == 1 << shift:
        seed, start = old_root, 0
    else:
        seed, start = proof[0], 1
    if len(proof) != start + inner + border:
        raise ProofError(
            f"the consistency proof has {len(proof)} hashes; "
            f"from size {old_size} to {new_size} needs {start + inner + border}"
        )
    rest = proof[start:]
    mask = (old_size - 1) >> shift
    h1 = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    if h1 != old_root:
        raise ProofError(f"the consistency proof does not lead to the old root of size {old_size}")
    h2 = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    if h2 != new_root:
        raise ProofError(f"the consistency proof does not lead to the new root of size {new_size}")
