#include "pairing/admin.h"

#include <arpa/inet.h>

#include <fstream>
#include <set>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/grpc_status.h"
#include "common/roles.h"
#include "common/spiffe_id.h"
#include "common/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "mesh/addresses.h"
#include "mesh/peer_table.h"
#include "mesh/wireguard_key.h"
#include "pairing/ceremony_crypto.h"
#include "pairing/cpace.h"
#include "pairing/short_code.h"
#include "pairing/wireguard.h"
#include "ppn/pairing/v1/pairing_service.grpc.pb.h"
#include "spdlog/spdlog.h"

namespace ppn::pairing {
namespace {

using namespace ppn::pairing::v1;  // NOLINT

constexpr char kLivePeers[] =
    "SELECT record FROM peers WHERE node_name NOT IN (SELECT node_name FROM revoked) ORDER BY mesh_address";

// The joiner's certificate is ephemeral and self-signed: it is not trusted through a CA but
// bound into CPace, so the TLS layer accepts it and the PAKE decides.
std::shared_ptr<grpc::ChannelCredentials> AcceptAnyServer() {
  grpc::experimental::TlsChannelCredentialsOptions options;
  options.set_verify_server_certs(false);
  options.set_check_call_host(false);
  options.set_certificate_verifier(std::make_shared<grpc::experimental::NoOpCertificateVerifier>());
  return grpc::experimental::TlsCredentials(options);
}

template <typename Fn>
absl::Status Call(Fn fn) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  grpc::Status s = fn(&ctx);
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
    return absl::UnavailableError(absl::StrCat("the joiner is unreachable: ", s.error_message()));
  }
  return FromGrpcStatus(s);
}

}  // namespace

absl::StatusOr<std::unique_ptr<AdminCore>> AdminCore::Create(Options options, const std::string& peers_db,
                                                             LedgerAppend ledger, RandomSource* random) {
  PPN_ASSIGN_OR_RETURN(std::unique_ptr<Database> db, Database::Open(peers_db));
  // A revoked node keeps its peers row (its name and address are never handed out again) and
  // gets a revoked row.
  PPN_RETURN_IF_ERROR(
      db->Migrate({"CREATE TABLE peers (node_name TEXT PRIMARY KEY, mesh_address TEXT UNIQUE NOT NULL, "
                   "record BLOB NOT NULL)",
                   "ALTER TABLE peers ADD COLUMN certificate_sha256 TEXT NOT NULL DEFAULT ''; "
                   "CREATE TABLE revoked (node_name TEXT PRIMARY KEY, ledger_index INTEGER NOT NULL, "
                   "reason TEXT NOT NULL)"}));
  return std::unique_ptr<AdminCore>(new AdminCore(std::move(options), std::move(db), std::move(ledger), random));
}

absl::StatusOr<uint64_t> AdminCore::AppendFoundingJoin() {
  const WireGuardPeer& self = options_.admin_peer;
  if (!IsValidIdPart(self.node_name()) || absl::StrContains(self.node_name(), ".") ||
      roles::IsReservedNodeName(self.node_name())) {
    return absl::InvalidArgumentError(
        absl::StrCat("founding node name \"", self.node_name().substr(0, 63), "\" is not valid"));
  }
  if (!mesh::IsWireGuardKey(self.public_key())) {
    return absl::InvalidArgumentError("the founding node's WireGuard public key is not a WireGuard key");
  }
  if (!self.endpoint().empty() && !mesh::IsValidEndpoint(self.endpoint())) {
    return absl::InvalidArgumentError(absl::StrCat("the founding node's WireGuard endpoint \"",
                                                   self.endpoint().substr(0, 80), "\" is not host:port"));
  }
  ppn::ledger::v1::AppendRequest entry;
  entry.set_kind("node.join");
  entry.set_subject(self.node_name());
  entry.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
  // Its name and key: a restart repeats it harmlessly; a new key is a new entry (which every
  // peer table refuses until the old one is revoked).
  entry.set_idempotency_key(absl::StrCat("founding-join/", self.node_name(), "/", self.public_key()));
  (*entry.mutable_attributes())[mesh::kAgentAddressAttribute] = options_.agent_address;
  (*entry.mutable_attributes())[mesh::kMeshAddressAttribute] = self.mesh_address();
  (*entry.mutable_attributes())[mesh::kPublicKeyAttribute] = self.public_key();
  (*entry.mutable_attributes())[mesh::kEndpointAttribute] = self.endpoint();
  (*entry.mutable_attributes())["spiffe_id"] = SpiffeId{options_.mesh, "host", self.node_name()}.ToString();
  return ledger_(entry);
}

std::vector<WireGuardPeer> AdminCore::Peers() {
  absl::MutexLock l(&mu_);
  std::vector<WireGuardPeer> out = {options_.admin_peer};
  absl::StatusOr<Statement> stmt = db_->Prepare(kLivePeers);
  while (stmt.ok() && stmt->Step().value_or(false)) {
    WireGuardPeer p;
    if (p.ParseFromString(stmt->ColumnBlob(0))) out.push_back(p);
  }
  return out;
}

absl::StatusOr<ApproveNodeResponse> AdminCore::Approve(const std::string& joiner_address,
                                                       const std::string& typed_code) {
  absl::Time t0 = absl::Now();
  PPN_ASSIGN_OR_RETURN(std::string code, ParseShortCode(typed_code));
  auto channel = grpc::CreateChannel(joiner_address, AcceptAnyServer());
  auto health = grpc::health::v1::Health::NewStub(channel);
  auto joiner = PairingJoiner::NewStub(channel);

  // Learn the certificate the joiner's TLS presented: it goes into the channel identifier.
  std::string fingerprint;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    grpc::health::v1::HealthCheckResponse r;
    grpc::Status s = health->Check(&ctx, {}, &r);
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
      return absl::UnavailableError(
          absl::StrCat("the joiner at ", joiner_address, " is unreachable: ", s.error_message()));
    }
    auto pem = ctx.auth_context()->FindPropertyValues("x509_pem_cert");
    if (pem.empty()) return absl::UnavailableError("the joiner presented no TLS certificate");
    PPN_ASSIGN_OR_RETURN(fingerprint, x509::Fingerprint(std::string(pem[0].data(), pem[0].size())));
  }
  std::string sid(16, '\0'), scalar(32, '\0');
  PPN_RETURN_IF_ERROR(random_->Fill(reinterpret_cast<uint8_t*>(sid.data()), sid.size()));
  PPN_RETURN_IF_ERROR(random_->Fill(reinterpret_cast<uint8_t*>(scalar.data()), scalar.size()));
  CPaceParty me(code, ChannelIdentifier(fingerprint), sid, scalar, options_.admin_name);
  PPN_ASSIGN_OR_RETURN(std::string share, me.Share());
  ExchangeRequest ex;
  ex.set_sid(sid);
  ex.set_initiator_share(share);
  ex.set_initiator_associated_data(options_.admin_name);
  ExchangeResponse exr;
  PPN_RETURN_IF_ERROR(Call([&](grpc::ClientContext* c) { return joiner->Exchange(c, ex, &exr); }));
  PPN_ASSIGN_OR_RETURN(std::string isk, me.Finish(exr.responder_share(), exr.responder_associated_data(), true));
  std::string transcript =
      TranscriptIr(share, options_.admin_name, exr.responder_share(), exr.responder_associated_data());
  ConfirmRequest cr;
  cr.set_initiator_confirmation(ConfirmationTag(isk, true, transcript));
  ConfirmResponse crr;
  PPN_RETURN_IF_ERROR(Call([&](grpc::ClientContext* c) { return joiner->Confirm(c, cr, &crr); }));
  if (!TagsEqual(crr.responder_confirmation(), ConfirmationTag(isk, false, transcript))) {
    return absl::PermissionDeniedError("the joiner's key confirmation is wrong: someone is relaying the ceremony");
  }
  PPN_ASSIGN_OR_RETURN(std::string plain,
                       Open(isk, {crr.enrollment_request().nonce(), crr.enrollment_request().ciphertext()}));
  EnrollmentRequest req;
  if (!req.ParseFromString(plain)) return absl::InvalidArgumentError("the enrollment request does not parse");
  if (!IsValidIdPart(req.node_name()) || absl::StrContains(req.node_name(), ".") ||
      req.node_name() == options_.admin_name || req.node_name() == options_.admin_peer.node_name() ||
      roles::IsReservedNodeName(req.node_name())) {
    return absl::InvalidArgumentError(absl::StrCat("node name \"", req.node_name().substr(0, 63), "\" is not allowed"));
  }
  if (!mesh::IsWireGuardKey(req.wireguard_public_key())) {
    return absl::InvalidArgumentError("the joiner's WireGuard public key is not 44 characters of base64 for 32 bytes");
  }
  // Every node's peer table would refuse a join with a malformed endpoint: refuse it here,
  // where the operator sees why.
  if (!req.wireguard_endpoint().empty() && !mesh::IsValidEndpoint(req.wireguard_endpoint())) {
    return absl::InvalidArgumentError(absl::StrCat("the joiner's WireGuard endpoint \"",
                                                   req.wireguard_endpoint().substr(0, 80), "\" is not host:port"));
  }

  absl::MutexLock l(&mu_);
  std::set<std::string> used = {options_.admin_peer.mesh_address()};
  {
    PPN_ASSIGN_OR_RETURN(Statement stmt, db_->Prepare("SELECT p.node_name, p.mesh_address, r.ledger_index FROM peers p "
                                                      "LEFT JOIN revoked r ON r.node_name = p.node_name"));
    while (true) {
      PPN_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      if (stmt.ColumnText(0) == req.node_name() && !stmt.ColumnIsNull(2)) {
        // Its old identity stays refused everywhere: a new certificate under the same name
        // would be refused too, and must not be.
        return absl::FailedPreconditionError(absl::StrCat("node ", req.node_name(), " was revoked (ledger entry ",
                                                          stmt.ColumnInt(2), "): join it under a new name"));
      }
      if (stmt.ColumnText(0) == req.node_name()) {
        return absl::AlreadyExistsError(absl::StrCat("node ", req.node_name(), " has already joined"));
      }
      used.insert(stmt.ColumnText(1));
    }
  }
  std::string address;
  for (int host = 2; host < 255 && address.empty(); ++host) {
    std::string candidate = absl::StrCat(options_.network, ".", host);
    if (used.count(candidate) == 0) address = candidate;
  }
  if (address.empty()) return absl::ResourceExhaustedError("the mesh network has no free address");
  SpiffeId id{options_.mesh, "host", req.node_name()};
  x509::CertRequest cert_req;
  cert_req.common_name = req.node_name();
  cert_req.spiffe_id = id.ToString();
  cert_req.dns_names = {req.node_name()};
  cert_req.ips = {address};
  // The certificate also names the address its host agent serves on, when that is an IP
  // literal (single-machine meshes serve on 127.0.0.1, real ones on the mesh address).
  // ":PORT" means the joiner's agent serves on the mesh address it is being given here.
  std::string agent_address = req.agent_address();
  if (absl::StartsWith(agent_address, ":")) agent_address = address + agent_address;
  std::string agent_host = agent_address.substr(0, agent_address.rfind(':'));
  in6_addr scratch;
  if (!agent_host.empty() && agent_host != address &&
      (inet_pton(AF_INET, agent_host.c_str(), &scratch) == 1 ||
       inet_pton(AF_INET6, agent_host.c_str(), &scratch) == 1)) {
    cert_req.ips.push_back(agent_host);
  }
  PPN_ASSIGN_OR_RETURN(std::string cert, x509::SignCsr(options_.ca, req.csr_pem(), cert_req));

  WireGuardPeer peer;
  peer.set_node_name(req.node_name());
  peer.set_public_key(req.wireguard_public_key());
  peer.set_endpoint(req.wireguard_endpoint());
  peer.set_mesh_address(address);
  peer.add_allowed_ips(address + "/32");
  EnrollmentGrant grant;
  grant.set_mesh_name(options_.mesh);
  grant.set_node_certificate_pem(cert);
  grant.set_mesh_ca_pem(options_.ca.cert_pem);
  grant.set_mesh_address(address);
  grant.set_mesh_prefix_length(24);
  *grant.mutable_admin_peer() = options_.admin_peer;
  {
    PPN_ASSIGN_OR_RETURN(Statement stmt, db_->Prepare(kLivePeers));
    while (true) {
      PPN_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      grant.add_peers()->ParseFromString(stmt.ColumnBlob(0));
    }
  }
  PPN_ASSIGN_OR_RETURN(SealedBox sealed, Seal(isk, true, 1, grant.SerializeAsString()));
  CompleteRequest comp;
  comp.mutable_enrollment_grant()->set_nonce(sealed.nonce);
  comp.mutable_enrollment_grant()->set_ciphertext(sealed.ciphertext);
  CompleteResponse compr;
  PPN_RETURN_IF_ERROR(Call([&](grpc::ClientContext* c) { return joiner->Complete(c, comp, &compr); }));
  PPN_ASSIGN_OR_RETURN(std::string ack_bytes, Open(isk, {compr.ack().nonce(), compr.ack().ciphertext()}));
  EnrollmentAck ack;
  if (!ack.ParseFromString(ack_bytes) || !ack.stored())
    return absl::InternalError("the joiner did not store its grant");

  PPN_ASSIGN_OR_RETURN(std::string der_sha256, x509::Fingerprint(cert));
  const std::string cert_sha256 = absl::BytesToHexString(der_sha256);
  PPN_ASSIGN_OR_RETURN(Statement insert, db_->Prepare("INSERT INTO peers (node_name, mesh_address, record, "
                                                      "certificate_sha256) VALUES (?, ?, ?, ?)"));
  PPN_RETURN_IF_ERROR(insert.Bind(1, req.node_name())
                          .Bind(2, address)
                          .BindBlob(3, peer.SerializeAsString())
                          .Bind(4, cert_sha256)
                          .Run());
  ppn::ledger::v1::AppendRequest entry;
  entry.set_kind("node.join");
  entry.set_subject(req.node_name());
  entry.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
  (*entry.mutable_attributes())[mesh::kAgentAddressAttribute] = agent_address;
  (*entry.mutable_attributes())[mesh::kMeshAddressAttribute] = address;
  (*entry.mutable_attributes())[mesh::kPublicKeyAttribute] = req.wireguard_public_key();
  (*entry.mutable_attributes())[mesh::kEndpointAttribute] = req.wireguard_endpoint();
  (*entry.mutable_attributes())["spiffe_id"] = id.ToString();
  (*entry.mutable_attributes())["certificate_sha256"] = cert_sha256;
  absl::StatusOr<uint64_t> index = ledger_(entry);
  if (!index.ok()) {
    return absl::Status(index.status().code(), absl::StrCat("the node joined but ", index.status().message()));
  }
  if (!options_.wireguard_peers_file.empty()) {
    // This node's side of the mesh: every joined node as a wg-quick peer (the interface
    // section, with this node's private key, is the operator's own).
    std::string conf = "# Written by pairing_admin: the peers of this node's WireGuard interface.\n";
    PPN_ASSIGN_OR_RETURN(Statement all, db_->Prepare(kLivePeers));
    std::vector<WireGuardPeer> peers;
    while (true) {
      PPN_ASSIGN_OR_RETURN(bool row, all.Step());
      if (!row) break;
      peers.emplace_back().ParseFromString(all.ColumnBlob(0));
    }
    std::string text =
        WgQuickConfig({"<this node's private key>", ""}, options_.admin_peer.mesh_address(), 24, peers, 51820);
    PPN_RETURN_IF_ERROR(WriteFileAtomically(options_.wireguard_peers_file, conf + text, 0600));
  }

  ApproveNodeResponse resp;
  resp.set_node_name(req.node_name());
  resp.set_mesh_address(address);
  resp.set_spiffe_id(id.ToString());
  resp.set_ledger_index(*index);
  *resp.mutable_elapsed() =
      google::protobuf::util::TimeUtil::MicrosecondsToDuration(absl::ToInt64Microseconds(absl::Now() - t0));
  spdlog::info("node.joined node={} mesh_address={} ledger_index={}", req.node_name(), address, *index);
  return resp;
}

absl::StatusOr<RevokeNodeResponse> AdminCore::Revoke(const std::string& node_name, const std::string& reason,
                                                     const std::string& actor) {
  if (node_name == options_.admin_peer.node_name() || node_name == options_.admin_name) {
    return absl::InvalidArgumentError(absl::StrCat("node ", node_name, " is the founding node: it cannot be revoked"));
  }
  if (reason.empty() || reason.size() > 200) {
    return absl::InvalidArgumentError("a revocation needs a reason of 1 to 200 characters (--reason)");
  }
  for (unsigned char c : reason) {
    if (c < 0x20 || c == 0x7f) return absl::InvalidArgumentError("the reason must not contain control characters");
  }
  SpiffeId id{options_.mesh, "host", node_name};
  absl::MutexLock l(&mu_);
  PPN_ASSIGN_OR_RETURN(Statement find, db_->Prepare("SELECT p.certificate_sha256, r.ledger_index FROM peers p "
                                                    "LEFT JOIN revoked r ON r.node_name = p.node_name "
                                                    "WHERE p.node_name = ?"));
  find.Bind(1, node_name);
  PPN_ASSIGN_OR_RETURN(bool found, find.Step());
  if (!found) return absl::NotFoundError(absl::StrCat("node ", node_name, " never joined this mesh"));
  RevokeNodeResponse resp;
  resp.set_node_name(node_name);
  resp.set_spiffe_id(id.ToString());
  if (!find.ColumnIsNull(1)) {
    resp.set_ledger_index(static_cast<uint64_t>(find.ColumnInt(1)));
    resp.set_already_revoked(true);
    return resp;
  }
  ppn::ledger::v1::AppendRequest entry;
  entry.set_kind("node.revoke");
  entry.set_subject(node_name);
  entry.set_outcome(ppn::ledger::v1::OUTCOME_SUCCESS);
  // A retry after a lost answer repeats the entry harmlessly.
  entry.set_idempotency_key(absl::StrCat("node-revoke/", node_name));
  (*entry.mutable_attributes())["spiffe_id"] = id.ToString();
  (*entry.mutable_attributes())["reason"] = reason;
  (*entry.mutable_attributes())["actor"] = actor;
  if (!find.ColumnText(0).empty()) (*entry.mutable_attributes())["certificate_sha256"] = find.ColumnText(0);
  PPN_ASSIGN_OR_RETURN(uint64_t index, ledger_(entry));
  PPN_ASSIGN_OR_RETURN(Statement insert,
                       db_->Prepare("INSERT INTO revoked (node_name, ledger_index, reason) VALUES (?, ?, ?)"));
  PPN_RETURN_IF_ERROR(insert.Bind(1, node_name).Bind(2, static_cast<int64_t>(index)).Bind(3, reason).Run());
  resp.set_ledger_index(index);
  spdlog::warn("node.revoked node={} ledger_index={} actor={}", node_name, index, actor);
  return resp;
}

}  // namespace ppn::pairing
