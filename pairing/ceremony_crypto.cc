#include "pairing/ceremony_crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "absl/strings/str_cat.h"
#include "pairing/cpace.h"

namespace ppn::pairing {
namespace {

std::string Sha512(absl::string_view data) {
  unsigned char md[SHA512_DIGEST_LENGTH];
  SHA512(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  return std::string(reinterpret_cast<char*>(md), sizeof md);
}

}  // namespace

std::string ChannelIdentifier(absl::string_view tls_fingerprint) {
  return LvCat({"PPN-pairing-v1", std::string(tls_fingerprint)});
}

std::string ConfirmationTag(absl::string_view isk, bool initiator, absl::string_view transcript) {
  std::string key = Sha512(absl::StrCat(initiator ? "PPN-KC-A" : "PPN-KC-B", isk));
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha512(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(transcript.data()), transcript.size(), mac, &len);
  return std::string(reinterpret_cast<char*>(mac), len);
}

bool TagsEqual(absl::string_view a, absl::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

absl::StatusOr<SealedBox> Seal(absl::string_view isk, bool from_initiator, uint32_t counter,
                               absl::string_view plaintext) {
  std::string key = Sha512(absl::StrCat("PPN-ENROLL", isk)).substr(0, 32);
  SealedBox box;
  box.nonce = std::string(12, '\0');
  box.nonce[0] = from_initiator ? 'A' : 'B';
  for (int i = 0; i < 4; ++i) box.nonce[11 - i] = static_cast<char>(counter >> (8 * i));
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  std::string out(plaintext.size() + 16, '\0');
  int len = 0, fin = 0;
  bool ok = EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, reinterpret_cast<const unsigned char*>(key.data()),
                               reinterpret_cast<const unsigned char*>(box.nonce.data())) == 1 &&
            EVP_EncryptUpdate(ctx, reinterpret_cast<unsigned char*>(out.data()), &len,
                              reinterpret_cast<const unsigned char*>(plaintext.data()),
                              static_cast<int>(plaintext.size())) == 1 &&
            EVP_EncryptFinal_ex(ctx, reinterpret_cast<unsigned char*>(out.data()) + len, &fin) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, out.data() + plaintext.size()) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) return absl::InternalError("AES-GCM seal failed");
  box.ciphertext = out;
  return box;
}

absl::StatusOr<std::string> Open(absl::string_view isk, const SealedBox& box) {
  if (box.nonce.size() != 12 || box.ciphertext.size() < 16)
    return absl::PermissionDeniedError("malformed sealed message");
  std::string key = Sha512(absl::StrCat("PPN-ENROLL", isk)).substr(0, 32);
  size_t n = box.ciphertext.size() - 16;
  std::string out(n, '\0');
  std::string tag = box.ciphertext.substr(n);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int len = 0, fin = 0;
  bool ok =
      EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, reinterpret_cast<const unsigned char*>(key.data()),
                         reinterpret_cast<const unsigned char*>(box.nonce.data())) == 1 &&
      EVP_DecryptUpdate(ctx, reinterpret_cast<unsigned char*>(out.data()), &len,
                        reinterpret_cast<const unsigned char*>(box.ciphertext.data()), static_cast<int>(n)) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag.data()) == 1 &&
      EVP_DecryptFinal_ex(ctx, reinterpret_cast<unsigned char*>(out.data()) + len, &fin) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) return absl::PermissionDeniedError("sealed message does not authenticate");
  return out;
}

}  // namespace ppn::pairing
