#pragma once

// Signed notes and checkpoints in the text formats transparency logs use (C2SP signed-note
// and tlog-checkpoint, as Go's golang.org/x/mod/sumdb/note): Ed25519 keys named
// "<name>+<hex key id>+<base64(0x01 || key)>", signature lines "— <name> <base64(id || sig)>".

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ppn::ledger {

// NoteSigner holds an Ed25519 private key under a name. The key material never leaves it
// except through PrivateKeyString() (for the key file, mode 0600).
class NoteSigner {
 public:
  // From a 32-byte Ed25519 seed.
  static absl::StatusOr<NoteSigner> FromSeed(const std::string& name, absl::string_view seed);
  // From "PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>".
  static absl::StatusOr<NoteSigner> Parse(absl::string_view private_key);

  // "<name>+<hex id>+<base64(0x01 || public key)>".
  std::string VerifierKey() const;
  // "PRIVATE+KEY+<name>+<hex id>+<base64(0x01 || seed)>": a secret, never logged.
  std::string PrivateKeyString() const;
  // `text` (ending in '\n') followed by a blank line and this key's signature line.
  absl::StatusOr<std::string> Sign(absl::string_view text) const;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::string seed_;
  std::string public_key_;
};

// NoteVerifier checks signatures of one named Ed25519 key.
struct NoteVerifier {
  std::string name;
  std::string key_id;      // 4 bytes
  std::string public_key;  // 32 bytes
};

// Parses a verifier key string; INVALID_ARGUMENT if malformed or its id does not match.
absl::StatusOr<NoteVerifier> ParseVerifierKey(absl::string_view vkey);

enum class NoteVerdict {
  kVerified,    // signed by the verifier's key
  kInvalid,     // carries a signature line of the verifier's key that does not verify
  kUnverified,  // well formed, but not signed by the verifier's key
  kMalformed,   // not a signed note
};

// Opens `signed_note`; on kVerified stores the signed text (with its final newline) in `text`.
NoteVerdict OpenNote(const NoteVerifier& verifier, absl::string_view signed_note, std::string* text);

// A checkpoint body: origin line, decimal tree size, base64 root hash, then optional lines.
struct Checkpoint {
  std::string origin;
  uint64_t size = 0;
  std::string root_hash;
  std::string rest;  // extension lines after the hash, verbatim
};

std::string MarshalCheckpoint(const Checkpoint& checkpoint);
// INVALID_ARGUMENT for a malformed body.
absl::StatusOr<Checkpoint> ParseCheckpoint(absl::string_view text);

}  // namespace ppn::ledger
