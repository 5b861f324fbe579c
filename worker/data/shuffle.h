// Seeded permutations that are identical on every platform and standard
// library (std::shuffle and std::uniform_int_distribution are not specified
// exactly, so a resumed job on another machine could see another order).
//
// Thread safety: all functions are pure and safe to call concurrently.
#pragma once

#include <cstdint>
#include <vector>

namespace qwha::data {

// Independent random streams derived from one user seed.
enum class RandomStream : uint64_t {
  kEvalSplit = 1,     // which examples form the held-out eval split
  kEpochShuffle = 2,  // the order of examples in an epoch
};

// A 64-bit seed for (`seed`, `stream`, `index`) through SplitMix64 mixing, so
// that nearby inputs (seed 1 epoch 0 vs seed 0 epoch 1) give unrelated seeds.
uint64_t DeriveSeed(uint64_t seed, RandomStream stream, uint64_t index);

// A uniformly random permutation of 0..n-1 (Fisher-Yates driven by
// std::mt19937_64, whose output the C++ standard fixes, with an unbiased
// bounded draw of our own).
std::vector<int64_t> Permutation(int64_t n, uint64_t seed);

}  // namespace qwha::data
