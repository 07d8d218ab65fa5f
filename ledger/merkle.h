#pragma once

// RFC 9162 Merkle tree hashing, proofs and proof verification. Pure C++ on OpenSSL's SHA-256.
// Hashes are 32-byte strings; proof paths are ordered bottom-up, as RFC 9162 PATH and PROOF
// produce them.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ppn::ledger {

using Hash = std::string;
inline constexpr size_t kHashBytes = 32;

// SHA-256(0x00 || leaf).
Hash HashLeaf(absl::string_view leaf);
// SHA-256(0x01 || left || right).
Hash HashChildren(absl::string_view left, absl::string_view right);
// MTH of the empty tree: SHA-256("").
Hash EmptyRoot();

// SubtreeSource yields the hashes of perfect subtrees: level L, index i covers leaves
// [i * 2^L, (i+1) * 2^L). Level 0 holds leaf hashes. Stores implement it so that a proof
// costs O(log n) lookups instead of a rebuild.
class SubtreeSource {
 public:
  virtual ~SubtreeSource() = default;
  // NOT_FOUND if that subtree is not complete (yet).
  virtual absl::StatusOr<Hash> PerfectSubtree(int level, uint64_t index) = 0;
};

// MTH(D[begin:end]) where `begin` is a multiple of the largest power of two below end-begin
// (true of every range RFC 9162's recursion visits). INVALID_ARGUMENT otherwise.
absl::StatusOr<Hash> RangeHash(SubtreeSource& source, uint64_t begin, uint64_t end);

// MTH(D[0:size]).
absl::StatusOr<Hash> RootHash(SubtreeSource& source, uint64_t size);

// PATH(index, D[0:size]). INVALID_ARGUMENT unless index < size.
absl::StatusOr<std::vector<Hash>> InclusionProof(SubtreeSource& source, uint64_t index, uint64_t size);

// PROOF(size1, D[0:size2]). INVALID_ARGUMENT unless 0 < size1 <= size2.
absl::StatusOr<std::vector<Hash>> ConsistencyProof(SubtreeSource& source, uint64_t size1, uint64_t size2);

// RFC 9162 section 2.1.3.2. OK if `proof` shows `leaf_hash` at `index` in the tree of
// `size` with `root`; DATA_LOSS saying what failed otherwise.
absl::Status VerifyInclusion(uint64_t index, uint64_t size, absl::string_view leaf_hash, const std::vector<Hash>& proof,
                             absl::string_view root);

// RFC 9162 section 2.1.4.2. OK if `proof` shows the tree (size1, root1) is a prefix of
// (size2, root2); DATA_LOSS otherwise. size1 = 0 is refused (nothing to prove).
absl::Status VerifyConsistency(uint64_t size1, uint64_t size2, absl::string_view root1, absl::string_view root2,
                               const std::vector<Hash>& proof);

// MemoryTree keeps every perfect subtree in memory: for tests and tools over raw leaves.
class MemoryTree final : public SubtreeSource {
 public:
  void AppendLeafHash(Hash leaf_hash);
  void AppendLeaf(absl::string_view leaf) { AppendLeafHash(HashLeaf(leaf)); }
  uint64_t size() const { return levels_.empty() ? 0 : levels_[0].size(); }
  absl::StatusOr<Hash> PerfectSubtree(int level, uint64_t index) override;

 private:
  std::vector<std::vector<Hash>> levels_;
};

// CompactRange is the right edge of a growing tree (one hash per set bit of its size): it
// gives the root of every prefix in O(log n) memory, as the offline verifier needs.
class CompactRange {
 public:
  void AppendLeafHash(Hash leaf_hash);
  uint64_t size() const { return size_; }
  // MTH(D[0:size()]).
  Hash Root() const;
  // The perfect subtrees that make up the tree, largest (leftmost) first.
  std::vector<Hash> Hashes() const { return hashes_; }

 private:
  uint64_t size_ = 0;
  std::vector<Hash> hashes_;
};

// Lowercase hex of bytes and back (INVALID_ARGUMENT on bad hex).
std::string ToHex(absl::string_view bytes);
absl::StatusOr<std::string> FromHex(absl::string_view hex);

}  // namespace ppn::ledger
