#include "ledger/merkle.h"

#include <random>

#include "catch2/catch.hpp"
#include "tests/harness/vectors.h"

namespace ppn::ledger {
namespace {

using ppn::testing::LoadVectors;
using ppn::testing::Unhex;

const nlohmann::json& Vectors() {
  static const nlohmann::json v = LoadVectors("merkle_rfc6962.json");
  return v;
}

std::vector<const nlohmann::json*> Groups(const std::string& kind) {
  std::vector<const nlohmann::json*> out;
  for (const auto& g : Vectors()["groups"]) {
    if (g["kind"] == kind) out.push_back(&g);
  }
  REQUIRE_FALSE(out.empty());
  return out;
}

std::vector<Hash> Hashes(const nlohmann::json& list) {
  std::vector<Hash> out;
  for (const auto& h : list) out.push_back(Unhex(h.get<std::string>()));
  return out;
}

MemoryTree TreeOf(const nlohmann::json& leaves, size_t n) {
  MemoryTree tree;
  for (size_t i = 0; i < n; ++i) tree.AppendLeaf(Unhex(leaves[i].get<std::string>()));
  return tree;
}

const nlohmann::json& StandardTree() {
  for (const auto& g : Vectors()["groups"]) {
    if (g["name"] == "standard_tree_8") return g;
  }
  FAIL("standard_tree_8 missing");
  throw;
}

TEST_CASE("hashing matches the published RFC 6962 hasher vectors", "[ledger][merkle]") {
  for (const auto* g : Groups("hash")) {
    for (const auto& v : (*g)["vectors"]) {
      INFO(v["desc"].get<std::string>());
      Hash want = Unhex(v["hash"]);
      if (v["op"] == "empty_root") CHECK(EmptyRoot() == want);
      if (v["op"] == "leaf") CHECK(HashLeaf(Unhex(v["input"])) == want);
      if (v["op"] == "node") CHECK(HashChildren(Unhex(v["left"]), Unhex(v["right"])) == want);
    }
  }
}

TEST_CASE("roots subtrees and compact ranges match the published tree", "[ledger][merkle]") {
  const auto& g = StandardTree();
  const auto& leaves = g["leaves"];
  for (size_t n = 0; n <= leaves.size(); ++n) {
    INFO("size " << n);
    MemoryTree tree = TreeOf(leaves, n);
    CHECK(*RootHash(tree, n) == Unhex(g["roots_by_size"][n]));
    CompactRange range;
    for (size_t i = 0; i < n; ++i) range.AppendLeafHash(HashLeaf(Unhex(leaves[i])));
    CHECK(range.Root() == Unhex(g["roots_by_size"][n]));
    CHECK(range.Hashes() == Hashes(g["compact_range_by_size"][n]));
  }
  MemoryTree full = TreeOf(leaves, leaves.size());
  for (size_t level = 0; level < g["node_hashes"].size(); ++level) {
    for (size_t i = 0; i < g["node_hashes"][level].size(); ++i) {
      CHECK(*full.PerfectSubtree(static_cast<int>(level), i) == Unhex(g["node_hashes"][level][i]));
    }
  }
}

TEST_CASE("inclusion paths equal the published ones and verify", "[ledger][merkle]") {
  const auto& leaves = StandardTree()["leaves"];
  for (const auto* g : Groups("inclusion_paths")) {
    for (const auto& v : (*g)["vectors"]) {
      uint64_t index = v["index"], size = v["tree_size"];
      INFO((*g)["name"].get<std::string>() << " index " << index << " size " << size);
      MemoryTree tree = TreeOf(leaves, size);
      auto path = InclusionProof(tree, index, size);
      REQUIRE(path.ok());
      CHECK(*path == Hashes(v["path"]));
      CHECK(VerifyInclusion(index, size, Unhex(v["leaf_hash"]), *path, Unhex(v["root"])).ok());
    }
  }
}

TEST_CASE("consistency proofs equal the published ones and verify", "[ledger][merkle]") {
  const auto& leaves = StandardTree()["leaves"];
  for (const auto* g : Groups("consistency_paths")) {
    for (const auto& v : (*g)["vectors"]) {
      uint64_t size1 = v["size1"], size2 = v["size2"];
      INFO((*g)["name"].get<std::string>() << " " << size1 << " -> " << size2);
      MemoryTree tree = TreeOf(leaves, size2);
      auto proof = ConsistencyProof(tree, size1, size2);
      REQUIRE(proof.ok());
      CHECK(*proof == Hashes(v["path"]));
      CHECK(VerifyConsistency(size1, size2, Unhex(v["root1"]), Unhex(v["root2"]), *proof).ok());
    }
  }
}

TEST_CASE("inclusion probes fail exactly when the vectors say", "[ledger][merkle]") {
  for (const auto* g : Groups("inclusion_probes")) {
    for (const auto& p : (*g)["probes"]) {
      INFO(p["file"].get<std::string>() << ": " << p["desc"].get<std::string>());
      absl::Status s =
          VerifyInclusion(p["leafIdx"], p["treeSize"], Unhex(p["leafHash"]), Hashes(p["proof"]), Unhex(p["root"]));
      CHECK(s.ok() == !p["wantErr"].get<bool>());
    }
  }
}

TEST_CASE("consistency probes fail exactly when the vectors say", "[ledger][merkle]") {
  for (const auto* g : Groups("consistency_probes")) {
    for (const auto& p : (*g)["probes"]) {
      INFO(p["file"].get<std::string>() << ": " << p["desc"].get<std::string>());
      absl::Status s =
          VerifyConsistency(p["size1"], p["size2"], Unhex(p["root1"]), Unhex(p["root2"]), Hashes(p["proof"]));
      CHECK(s.ok() == !p["wantErr"].get<bool>());
    }
  }
}

TEST_CASE("a real CT log's proofs verify", "[ledger][merkle]") {
  for (const auto* g : Groups("real_log")) {
    uint64_t size = (*g)["tree_size"];
    Hash root = Unhex((*g)["root"]);
    const auto& inc = (*g)["inclusion"];
    CHECK(HashLeaf(Unhex(inc["leaf"])) == Unhex(inc["leaf_hash"]));
    CHECK(VerifyInclusion(inc["index"], size, Unhex(inc["leaf_hash"]), Hashes(inc["path"]), root).ok());
    const auto& con = (*g)["consistency"];
    CHECK(VerifyConsistency(con["size1"], size, Unhex(con["root1"]), root, Hashes(con["path"])).ok());
    Hash wrong_root1 = Unhex(con["root1"]);
    wrong_root1[0] ^= 1;
    CHECK_FALSE(VerifyConsistency(con["size1"], size, wrong_root1, root, Hashes(con["path"])).ok());
  }
}

TEST_CASE("every proof of random trees verifies and proofs of wrong inputs do not", "[ledger][merkle][property]") {
  std::mt19937_64 rng(20261122);
  MemoryTree tree;
  std::vector<Hash> roots = {EmptyRoot()};
  const uint64_t kMax = 3000;
  for (uint64_t i = 0; i < kMax; ++i) {
    tree.AppendLeaf("leaf-" + std::to_string(rng()));
    roots.push_back(*RootHash(tree, tree.size()));
  }
  std::vector<uint64_t> sizes;
  for (uint64_t n = 1; n <= 70; ++n) sizes.push_back(n);
  for (int i = 0; i < 12; ++i) sizes.push_back(1 + rng() % kMax);
  sizes.push_back(kMax);
  for (uint64_t n : sizes) {
    INFO("size " << n);
    for (uint64_t m = 0; m < n; m += (n > 200 ? 1 + rng() % 37 : 1)) {
      Hash leaf = *tree.PerfectSubtree(0, m);
      auto path = InclusionProof(tree, m, n);
      REQUIRE(path.ok());
      REQUIRE(VerifyInclusion(m, n, leaf, *path, roots[n]).ok());
      Hash other = *tree.PerfectSubtree(0, (m + 1) % kMax);
      CHECK_FALSE(VerifyInclusion(m, n, other, *path, roots[n]).ok());
      // The same path against the next tree's root: a proof is bound to its tree size.
      if (n < kMax) CHECK_FALSE(VerifyInclusion(m, n + 1, leaf, *path, roots[n + 1]).ok());
      if (n > 1) CHECK_FALSE(VerifyInclusion(m ^ 1, n, leaf, *path, roots[n]).ok());

      uint64_t size1 = m + 1;
      auto proof = ConsistencyProof(tree, size1, n);
      REQUIRE(proof.ok());
      REQUIRE(VerifyConsistency(size1, n, roots[size1], roots[n], *proof).ok());
      if (size1 < n) {
        CHECK_FALSE(VerifyConsistency(size1, n, roots[size1 + 1], roots[n], *proof).ok());
        CHECK_FALSE(VerifyConsistency(size1, n, roots[size1], roots[n - 1], *proof).ok());
      }
    }
  }
}

TEST_CASE("proofs outside the tree are refused", "[ledger][merkle]") {
  MemoryTree tree;
  for (int i = 0; i < 5; ++i) tree.AppendLeaf(std::to_string(i));
  CHECK(InclusionProof(tree, 5, 5).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(ConsistencyProof(tree, 0, 5).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(ConsistencyProof(tree, 4, 6).status().code() == absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ppn::ledger
