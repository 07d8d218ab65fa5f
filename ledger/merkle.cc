#include "ledger/merkle.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace ppn::ledger {
namespace {

Hash Sha256(absl::string_view prefix, absl::string_view a, absl::string_view b) {
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  SHA256_Update(&ctx, prefix.data(), prefix.size());
  SHA256_Update(&ctx, a.data(), a.size());
  SHA256_Update(&ctx, b.data(), b.size());
  Hash out(kHashBytes, '\0');
  SHA256_Final(reinterpret_cast<unsigned char*>(out.data()), &ctx);
  return out;
}

// Largest power of two strictly below n (n >= 2).
uint64_t SplitPoint(uint64_t n) {
  uint64_t k = 1;
  while (k << 1 < n) k <<= 1;
  return k;
}

bool IsPowerOfTwo(uint64_t n) { return n != 0 && (n & (n - 1)) == 0; }

int Log2(uint64_t n) {
  int l = 0;
  while ((uint64_t{1} << l) < n) ++l;
  return l;
}

absl::Status Path(SubtreeSource& source, uint64_t index, uint64_t begin, uint64_t end, std::vector<Hash>* out) {
  uint64_t n = end - begin;
  if (n == 1) return absl::OkStatus();
  uint64_t k = SplitPoint(n);
  absl::StatusOr<Hash> sibling;
  if (index < k) {
    absl::Status s = Path(source, index, begin, begin + k, out);
    if (!s.ok()) return s;
    sibling = RangeHash(source, begin + k, end);
  } else {
    absl::Status s = Path(source, index - k, begin + k, end, out);
    if (!s.ok()) return s;
    sibling = RangeHash(source, begin, begin + k);
  }
  if (!sibling.ok()) return sibling.status();
  out->push_back(*std::move(sibling));
  return absl::OkStatus();
}

absl::Status SubProof(SubtreeSource& source, uint64_t m, uint64_t begin, uint64_t end, bool complete,
                      std::vector<Hash>* out) {
  uint64_t n = end - begin;
  if (m == n) {
    if (complete) return absl::OkStatus();
    absl::StatusOr<Hash> h = RangeHash(source, begin, end);
    if (!h.ok()) return h.status();
    out->push_back(*std::move(h));
    return absl::OkStatus();
  }
  uint64_t k = SplitPoint(n);
  absl::StatusOr<Hash> h;
  if (m <= k) {
    absl::Status s = SubProof(source, m, begin, begin + k, complete, out);
    if (!s.ok()) return s;
    h = RangeHash(source, begin + k, end);
  } else {
    absl::Status s = SubProof(source, m - k, begin + k, end, false, out);
    if (!s.ok()) return s;
    h = RangeHash(source, begin, begin + k);
  }
  if (!h.ok()) return h.status();
  out->push_back(*std::move(h));
  return absl::OkStatus();
}

absl::Status Mismatch(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("proof does not verify: ", what));
}

}  // namespace

Hash HashLeaf(absl::string_view leaf) { return Sha256(absl::string_view("\0", 1), leaf, ""); }

Hash HashChildren(absl::string_view left, absl::string_view right) { return Sha256("\x01", left, right); }

Hash EmptyRoot() { return Sha256("", "", ""); }

absl::StatusOr<Hash> RangeHash(SubtreeSource& source, uint64_t begin, uint64_t end) {
  if (end <= begin) return absl::InvalidArgumentError("empty range");
  uint64_t n = end - begin;
  if (IsPowerOfTwo(n)) {
    if (begin % n != 0) {
      return absl::InvalidArgumentError(absl::StrCat("range [", begin, ",", end, ") unaligned"));
    }
    int level = Log2(n);
    return source.PerfectSubtree(level, begin >> level);
  }
  uint64_t k = SplitPoint(n);
  if (begin % k != 0) {
    return absl::InvalidArgumentError(absl::StrCat("range [", begin, ",", end, ") unaligned"));
  }
  absl::StatusOr<Hash> left = RangeHash(source, begin, begin + k);
  if (!left.ok()) return left.status();
  absl::StatusOr<Hash> right = RangeHash(source, begin + k, end);
  if (!right.ok()) return right.status();
  return HashChildren(*left, *right);
}

absl::StatusOr<Hash> RootHash(SubtreeSource& source, uint64_t size) {
  if (size == 0) return EmptyRoot();
  return RangeHash(source, 0, size);
}

absl::StatusOr<std::vector<Hash>> InclusionProof(SubtreeSource& source, uint64_t index, uint64_t size) {
  if (index >= size) {
    return absl::InvalidArgumentError(absl::StrCat("leaf index ", index, " is not in a tree of size ", size));
  }
  std::vector<Hash> out;
  absl::Status s = Path(source, index, 0, size, &out);
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<Hash>> ConsistencyProof(SubtreeSource& source, uint64_t size1, uint64_t size2) {
  if (size1 == 0 || size1 > size2) {
    return absl::InvalidArgumentError(absl::StrCat("no consistency proof from size ", size1, " to size ", size2));
  }
  std::vector<Hash> out;
  absl::Status s = SubProof(source, size1, 0, size2, true, &out);
  if (!s.ok()) return s;
  return out;
}

absl::Status VerifyInclusion(uint64_t index, uint64_t size, absl::string_view leaf_hash, const std::vector<Hash>& proof,
                             absl::string_view root) {
  if (index >= size) return Mismatch("leaf index beyond tree size");
  if (leaf_hash.size() != kHashBytes) return Mismatch("leaf hash is not 32 bytes");
  uint64_t fn = index;
  uint64_t sn = size - 1;
  Hash r(leaf_hash);
  for (const Hash& p : proof) {
    if (sn == 0) return Mismatch("inclusion path too long");
    if ((fn & 1) || fn == sn) {
      r = HashChildren(p, r);
      if (!(fn & 1)) {
        while (!(fn & 1) && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = HashChildren(r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  if (sn != 0) return Mismatch("inclusion path too short");
  if (r != root) return Mismatch("computed root differs");
  return absl::OkStatus();
}

absl::Status VerifyConsistency(uint64_t size1, uint64_t size2, absl::string_view root1, absl::string_view root2,
                               const std::vector<Hash>& proof) {
  if (size1 == 0) return Mismatch("first tree size is 0");
  if (size1 > size2) return Mismatch("first tree is larger than the second");
  if (size1 == size2) {
    if (!proof.empty()) return Mismatch("proof for equal sizes must be empty");
    if (root1 != root2) return Mismatch("equal sizes with different roots");
    return absl::OkStatus();
  }
  if (proof.empty()) return Mismatch("empty consistency proof");
  std::vector<Hash> path;
  if (IsPowerOfTwo(size1)) path.emplace_back(root1);
  path.insert(path.end(), proof.begin(), proof.end());
  uint64_t fn = size1 - 1;
  uint64_t sn = size2 - 1;
  while (fn & 1) {
    fn >>= 1;
    sn >>= 1;
  }
  Hash fr = path[0];
  Hash sr = path[0];
  for (size_t i = 1; i < path.size(); ++i) {
    const Hash& c = path[i];
    if (sn == 0) return Mismatch("consistency path too long");
    if ((fn & 1) || fn == sn) {
      fr = HashChildren(c, fr);
      sr = HashChildren(c, sr);
      if (!(fn & 1)) {
        while (!(fn & 1) && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      sr = HashChildren(sr, c);
    }
    fn >>= 1;
    sn >>= 1;
  }
  if (sn != 0) return Mismatch("consistency path too short");
  if (fr != root1) return Mismatch("first root differs");
  if (sr != root2) return Mismatch("second root differs");
  return absl::OkStatus();
}

void MemoryTree::AppendLeafHash(Hash leaf_hash) {
  if (levels_.empty()) levels_.emplace_back();
  levels_[0].push_back(std::move(leaf_hash));
  for (size_t level = 0; levels_[level].size() % 2 == 0; ++level) {
    if (levels_.size() == level + 1) levels_.emplace_back();
    const auto& row = levels_[level];
    Hash parent = HashChildren(row[row.size() - 2], row[row.size() - 1]);
    levels_[level + 1].push_back(std::move(parent));
  }
}

absl::StatusOr<Hash> MemoryTree::PerfectSubtree(int level, uint64_t index) {
  if (level < 0 || static_cast<size_t>(level) >= levels_.size() || index >= levels_[level].size()) {
    return absl::NotFoundError(absl::StrCat("no complete subtree at level ", level, " index ", index));
  }
  return levels_[level][index];
}

void CompactRange::AppendLeafHash(Hash leaf_hash) {
  hashes_.push_back(std::move(leaf_hash));
  // Merge equal-sized neighbours: one merge per trailing one bit of the old size.
  for (uint64_t s = size_; s & 1; s >>= 1) {
    Hash right = std::move(hashes_.back());
    hashes_.pop_back();
    hashes_.back() = HashChildren(hashes_.back(), right);
  }
  ++size_;
}

Hash CompactRange::Root() const {
  if (hashes_.empty()) return EmptyRoot();
  Hash r = hashes_.back();
  for (size_t i = hashes_.size() - 1; i-- > 0;) r = HashChildren(hashes_[i], r);
  return r;
}

std::string ToHex(absl::string_view bytes) { return absl::BytesToHexString(bytes); }

absl::StatusOr<std::string> FromHex(absl::string_view hex) {
  if (hex.size() % 2 != 0) return absl::InvalidArgumentError("odd-length hex");
  for (char c : hex) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError("not hex");
    }
  }
  return absl::HexStringToBytes(hex);
}

}  // namespace ppn::ledger
