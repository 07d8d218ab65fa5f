#include "fleet/private_networks.h"

#include "catch2/catch.hpp"

namespace ppn::fleet {
namespace {

TEST_CASE("networks get a /24 each, never-used ones before freed ones, and the pool says when it is full",
          "[fleet][private_networks]") {
  absl::StatusOr<NetworkPool> made = NetworkPool::Make("10.214.0.0/23");  // two /24s
  REQUIRE(made.ok());
  NetworkPool pool = *made;
  absl::StatusOr<StoredNetwork> a = pool.Make("acme", "backend", "net-a", 1);
  REQUIRE(a.ok());
  pool.Add(*a);
  CHECK(pool.Cidr(*a) == "10.214.0.0/24");
  CHECK(pool.Make("acme", "backend", "net-x", 2).status().code() == absl::StatusCode::kAlreadyExists);
  CHECK(pool.Make("acme", "Bad_Name", "net-x", 2).status().code() == absl::StatusCode::kInvalidArgument);
  absl::StatusOr<StoredNetwork> b = pool.Make("globex", "backend", "net-b", 2);  // same name, other tenant
  REQUIRE(b.ok());
  pool.Add(*b);
  CHECK(pool.Cidr(*b) == "10.214.1.0/24");
  absl::Status full = pool.Make("acme", "more", "net-c", 3).status();
  CHECK(full.code() == absl::StatusCode::kResourceExhausted);
  CHECK(full.message() ==
        "no private network is left to hand out: delete a network, or ask the operator for a larger pool");
  pool.Remove("net-a");
  absl::StatusOr<StoredNetwork> c = pool.Make("acme", "more", "net-c", 3);
  REQUIRE(c.ok());
  CHECK(c->index == 0);  // freed, reused when nothing else is left

  CHECK(pool.Find("acme", "net-b") == nullptr);  // another tenant's is not found
  CHECK(pool.Find("globex", "net-b") != nullptr);
  CHECK(pool.Find("", "net-b") != nullptr);
  CHECK(NetworkNotFound("net-b").message() == "network net-b not found");
  CHECK(!NetworkPool::Make("10.214.0.0/25").ok());
  CHECK(!NetworkPool::Make("nonsense").ok());
}

TEST_CASE("a VM gets the lowest free address from .2 and .1 stays reserved", "[fleet][private_networks]") {
  NetworkPool pool = *NetworkPool::Make("10.214.0.0/16");
  StoredNetwork n = *pool.Make("acme", "backend", "net-a", 1);
  CHECK(pool.Assign(n, {})->address() == "10.214.0.2");
  CHECK(pool.Assign(n, {"10.214.0.2", "10.214.0.4"})->address() == "10.214.0.3");
  std::set<std::string> all;
  for (int i = 2; i < 255; ++i) all.insert("10.214.0." + std::to_string(i));
  CHECK(pool.Assign(n, all).status().code() == absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace ppn::fleet
