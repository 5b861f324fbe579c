#!/usr/bin/env python3
"""Generate kernels/hadamard_k.h: +-1 Hadamard matrices of non-power-of-two orders K.

Usage:
  python3 scripts/gen_hadamard.py          # (re)write kernels/hadamard_k.h
  python3 scripts/gen_hadamard.py --check  # exit 1 if the header is stale

Every matrix is built from a classical construction (no big tables) and checked
to satisfy H * H^T = K * I exactly before anything is written:
  Paley I    q prime power, q = 3 (mod 4)  -> order q + 1
  Paley II   q prime power, q = 1 (mod 4)  -> order 2 (q + 1)
  Sylvester  H -> [[H, H], [H, -H]]         -> order 2 K
  Williamson four symmetric circulants A, B, C, D of order n with
             A^2 + B^2 + C^2 + D^2 = 4 n I  -> order 4 n
Python 3.11 standard library only.
"""

import argparse
import itertools
import operator
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
HEADER_PATH = REPO_ROOT / "kernels" / "hadamard_k.h"

Matrix = list[list[int]]


# ---------------------------------------------------------------------------
# Finite field GF(p^k), polynomial basis modulo a monic irreducible polynomial.
# An element is encoded as the integer sum(c_i * p^i) of its coefficients c_i.
# ---------------------------------------------------------------------------

def _factor_prime_power(q: int) -> tuple[int, int]:
    """Return (p, k) with q = p^k, p prime; raise if q is not a prime power."""
    for p in range(2, q + 1):
        if q % p == 0:
            k, rest = 0, q
            while rest % p == 0:
                rest //= p
                k += 1
            if rest != 1:
                raise ValueError(f"{q} is not a prime power")
            return p, k
    raise ValueError(f"{q} is not a prime power")


def _poly_mod(num: list[int], den: list[int], p: int) -> list[int]:
    """Remainder of num / den over GF(p); coefficient lists, lowest degree first, den monic."""
    num = num[:]
    while len(num) >= len(den):
        lead = num[-1]
        if lead:
            shift = len(num) - len(den)
            for i, d in enumerate(den):
                num[shift + i] = (num[shift + i] - lead * d) % p
        num.pop()
    return num


def _is_irreducible(poly: list[int], p: int) -> bool:
    """Trial division by every monic polynomial of degree 1 .. deg/2."""
    degree = len(poly) - 1
    for d in range(1, degree // 2 + 1):
        for low in itertools.product(range(p), repeat=d):
            if not any(_poly_mod(poly, list(low) + [1], p)):
                return False
    return True


class GaloisField:
    def __init__(self, q: int):
        self.q = q
        self.p, self.k = _factor_prime_power(q)
        p, k = self.p, self.k
        # Smallest monic irreducible polynomial of degree k (x itself for k == 1).
        self.modulus = next(
            list(low) + [1]
            for low in itertools.product(range(p), repeat=k)
            if _is_irreducible(list(low) + [1], p)
        )

    def _coeffs(self, a: int) -> list[int]:
        return [(a // self.p**i) % self.p for i in range(self.k)]

    def _encode(self, coeffs: list[int]) -> int:
        return sum(c * self.p**i for i, c in enumerate(coeffs))

    def sub(self, a: int, b: int) -> int:
        ca, cb = self._coeffs(a), self._coeffs(b)
        return self._encode([(x - y) % self.p for x, y in zip(ca, cb)])

    def mul(self, a: int, b: int) -> int:
        ca, cb = self._coeffs(a), self._coeffs(b)
        prod = [0] * (2 * self.k - 1)
        for i, x in enumerate(ca):
            for j, y in enumerate(cb):
                prod[i + j] = (prod[i + j] + x * y) % self.p
        rem = _poly_mod(prod, self.modulus, self.p)
        return self._encode(rem + [0] * (self.k - len(rem)))

    def pow(self, a: int, e: int) -> int:
        result = 1
        while e:
            if e & 1:
                result = self.mul(result, a)
            a = self.mul(a, a)
            e >>= 1
        return result

    def quadratic_character(self) -> list[int]:
        """chi[a] for every element a: 0 at 0, +1 on squares, -1 otherwise (Euler's criterion)."""
        minus_one = self.p - 1  # encoding of -1 (constant polynomial p - 1)
        chi = [0] * self.q
        for a in range(1, self.q):
            r = self.pow(a, (self.q - 1) // 2)
            assert r in (1, minus_one), f"GF({self.q}) arithmetic is broken"
            chi[a] = 1 if r == 1 else -1
        return chi


def jacobsthal(q: int) -> Matrix:
    """Q[a][b] = chi(a - b) over GF(q)."""
    field = GaloisField(q)
    chi = field.quadratic_character()
    return [[chi[field.sub(a, b)] for b in range(q)] for a in range(q)]


# ---------------------------------------------------------------------------
# Constructions.
# ---------------------------------------------------------------------------

def paley_i(q: int) -> Matrix:
    """Paley I (1933): H = I + S, S = [[0, 1^T], [-1, Q]] skew; order q + 1, q = 3 mod 4."""
    assert q % 4 == 3
    jac = jacobsthal(q)
    size = q + 1
    skew = [[0] + [1] * q] + [[-1] + row for row in jac]
    return [[skew[i][j] + (i == j) for j in range(size)] for i in range(size)]


def paley_ii(q: int) -> Matrix:
    """Paley II (1933): symmetric conference matrix C = [[0, 1^T], [1, Q]];
    H = C (x) [[1, 1], [1, -1]] + I (x) [[1, -1], [-1, -1]]; order 2 (q + 1), q = 1 mod 4."""
    assert q % 4 == 1
    jac = jacobsthal(q)
    conf = [[0] + [1] * q] + [[1] + row for row in jac]
    on_zero = ((1, -1), (-1, -1))   # replaces a 0 entry (the diagonal)
    on_one = ((1, 1), (1, -1))      # multiplied by a +-1 entry
    size = 2 * (q + 1)
    h = [[0] * size for _ in range(size)]
    for i, row in enumerate(conf):
        for j, c in enumerate(row):
            block = on_zero if c == 0 else tuple(tuple(c * x for x in r) for r in on_one)
            for di in range(2):
                for dj in range(2):
                    h[2 * i + di][2 * j + dj] = block[di][dj]
    return h


def sylvester_double(h: Matrix) -> Matrix:
    """Sylvester (1867): [[H, H], [H, -H]]."""
    return [row + row for row in h] + [row + [-x for x in row] for row in h]


def circulant(first_row: list[int]) -> Matrix:
    n = len(first_row)
    return [[first_row[(j - i) % n] for j in range(n)] for i in range(n)]


def williamson(rows: tuple[str, str, str, str]) -> Matrix:
    """Williamson (1944) array of four symmetric circulants:
        [[ A,  B,  C,  D],
         [-B,  A, -D,  C],
         [-C,  D,  A, -B],
         [-D, -C,  B,  A]]"""
    seqs = [[1 if ch == "+" else -1 for ch in s] for s in rows]
    n = len(seqs[0])
    for s in seqs:
        assert len(s) == n and all(s[i] == s[n - i] for i in range(1, n)), "not symmetric"
    a, b, c, d = (circulant(s) for s in seqs)

    def neg(m: Matrix) -> Matrix:
        return [[-x for x in r] for r in m]

    layout = [[a, b, c, d],
              [neg(b), a, neg(d), c],
              [neg(c), d, a, neg(b)],
              [neg(d), neg(c), b, a]]
    return [list(itertools.chain.from_iterable(blk[i] for blk in block_row))
            for block_row in layout for i in range(n)]


# First rows of Williamson quadruples (A, B, C, D), '+' = +1, '-' = -1.
# Data as tabulated in SageMath, sage/combinat/matrices/hadamard_matrix.py,
# williamson_type_quadruples_smallcases():
#   n = 39 from S. London, "Constructing new Turyn type sequences, T-sequences
#          and Hadamard matrices", PhD thesis, Univ. of Illinois at Chicago, 2013
#          (order 39 Williamson matrices first found by D. Z. Djokovic,
#          Discrete Math. 115 (1993) 267-271).
#   n = 43 from M. Hall Jr., "Combinatorial Theory", 2nd ed., Wiley, 1983.
WILLIAMSON_ROWS = {
    39: ("+++--+-+-----+--++----++--+-----+-+--++",
         "+++--++-+---+-+--+----+--+-+---+-++--++",
         "++++---+--++----+-+--+-+----++--+---+++",
         "+---++-+-+-----+++-++-+++-----+-+-++---"),
    43: ("++---++++-+--+--++--------++--+--+-++++---+",
         "+++-+-++--+-+-++++-+----+-++++-+-+--++-+-++",
         "++-++++++----+-+--++-++-++--+-+----++++++-+",
         "+---++--++++-+-+++-++--++-+++-+-++++--++---"),
}

# K -> (description, builder). Order matters: it is the order in the header.
CONSTRUCTIONS = {
    12: ("Paley I, q = 11", lambda: paley_i(11)),
    20: ("Paley I, q = 19", lambda: paley_i(19)),
    28: ("Paley I, q = 27 = 3^3 (GF(27))", lambda: paley_i(27)),
    36: ("Paley II, q = 17", lambda: paley_ii(17)),
    40: ("Sylvester doubling of the order-20 Paley I matrix", lambda: sylvester_double(paley_i(19))),
    52: ("Paley II, q = 25 = 5^2 (GF(25))", lambda: paley_ii(25)),
    60: ("Paley I, q = 59", lambda: paley_i(59)),
    108: ("Paley I, q = 107", lambda: paley_i(107)),
    140: ("Paley I, q = 139", lambda: paley_i(139)),
    156: ("Williamson, n = 39", lambda: williamson(WILLIAMSON_ROWS[39])),
    172: ("Williamson, n = 43", lambda: williamson(WILLIAMSON_ROWS[43])),
}


def verify_hadamard(k: int, h: Matrix) -> None:
    """Fail loudly unless h is K x K, entries +-1, and H * H^T == K * I exactly."""
    if len(h) != k or any(len(row) != k for row in h):
        raise SystemExit(f"error: order-{k} matrix has the wrong shape")
    if any(x not in (1, -1) for row in h for x in row):
        raise SystemExit(f"error: order-{k} matrix has entries other than +-1")
    for i in range(k):
        for j in range(i, k):
            dot = sum(map(operator.mul, h[i], h[j]))
            if dot != (k if i == j else 0):
                raise SystemExit(f"error: order-{k} matrix: row {i} . row {j} = {dot}")


# ---------------------------------------------------------------------------
# Header emission.
# ---------------------------------------------------------------------------

def render_header() -> str:
    out = [
        "// Generated by scripts/gen_hadamard.py \u2014 do not edit.",
        "//",
        "// +-1 Hadamard matrices H of order K (H * H^T = K * I), row-major.",
        "// Each was verified exactly by the generator. Constructions:",
    ]
    for k, (desc, _) in CONSTRUCTIONS.items():
        out.append(f"//   K = {k:3d}: {desc}")
    out += [
        "",
        "#pragma once",
        "",
        "#include <cstdint>",
        "",
        "namespace qwha::kernels {",
        "",
    ]
    for k, (desc, build) in CONSTRUCTIONS.items():
        h = build()
        verify_hadamard(k, h)
        out.append(f"// K = {k}: {desc}.")
        out.append(f"inline constexpr int8_t kHadamard{k}[{k} * {k}] = {{")
        for row in h:
            out.append("    " + ", ".join(f"{x:2d}" for x in row) + ",")
        out.append("};")
        out.append("")
    out += [
        "struct HadamardK {",
        "  int k;",
        "  const int8_t* data;",
        "};",
        "",
        "inline constexpr HadamardK kHadamardKs[] = {",
    ]
    out += [f"    {{{k}, kHadamard{k}}}," for k in CONSTRUCTIONS]
    out += [
        "};",
        "",
        "// Returns the order-k matrix, or nullptr when k is not supported.",
        "inline const int8_t* FindHadamardK(int k) {",
        "  for (const HadamardK& entry : kHadamardKs) {",
        "    if (entry.k == k) return entry.data;",
        "  }",
        "  return nullptr;",
        "}",
        "",
        "}  // namespace qwha::kernels",
        "",
    ]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare a fresh generation with the header on disk; exit 1 if different")
    args = parser.parse_args()

    text = render_header()
    if args.check:
        current = HEADER_PATH.read_text(encoding="utf-8") if HEADER_PATH.exists() else None
        if current != text:
            print(f"{HEADER_PATH.relative_to(REPO_ROOT)} is stale; rerun scripts/gen_hadamard.py",
                  file=sys.stderr)
            return 1
        print(f"{HEADER_PATH.relative_to(REPO_ROOT)} is up to date")
        return 0

    HEADER_PATH.parent.mkdir(parents=True, exist_ok=True)
    HEADER_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {HEADER_PATH.relative_to(REPO_ROOT)} ({', '.join(map(str, CONSTRUCTIONS))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
