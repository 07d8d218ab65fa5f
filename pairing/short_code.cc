#include "pairing/short_code.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace ppn::pairing {
namespace {

constexpr char kSymbols[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
constexpr char kCheckSymbols[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ*~$=U";

int ValueOf(char c) {
  c = absl::ascii_toupper(c);
  if (c == 'I' || c == 'L') c = '1';
  if (c == 'O') c = '0';
  for (int i = 0; i < 32; ++i) {
    if (kSymbols[i] == c) return i;
  }
  return -1;
}

char CheckSymbol(uint64_t value) { return kCheckSymbols[value % 37]; }

}  // namespace

absl::StatusOr<std::string> NewShortCode(RandomSource& random) {
  uint8_t bytes[5];
  absl::Status s = random.Fill(bytes, sizeof bytes);
  if (!s.ok()) return s;
  uint64_t value = 0;
  for (uint8_t b : bytes) value = (value << 8) | b;
  std::string code;
  for (int i = 7; i >= 0; --i) code.push_back(kSymbols[(value >> (5 * i)) & 31]);
  return absl::StrCat(code.substr(0, 4), "-", code.substr(4, 4), "-", std::string(1, CheckSymbol(value)));
}

absl::StatusOr<std::string> ParseShortCode(const std::string& typed) {
  std::string s;
  for (char c : typed) {
    if (c != '-' && c != ' ') s.push_back(c);
  }
  if (s.size() != 9) return absl::InvalidArgumentError("a pairing code has 8 symbols and a check symbol: XXXX-XXXX-C");
  uint64_t value = 0;
  std::string canonical;
  for (int i = 0; i < 8; ++i) {
    int v = ValueOf(s[i]);
    // Name the position, not the symbol: this message is logged and the code is a secret.
    if (v < 0) return absl::InvalidArgumentError(absl::StrCat("symbol ", i + 1, " of the code is not a code symbol"));
    value = (value << 5) | static_cast<uint64_t>(v);
    canonical.push_back(kSymbols[v]);
  }
  char check = absl::ascii_toupper(s[8]);
  if (check == 'I' || check == 'L') check = '1';
  if (check == 'O') check = '0';
  if (check != CheckSymbol(value)) {
    return absl::InvalidArgumentError("the code's check symbol does not match: it was mistyped (no attempt was used)");
  }
  canonical.push_back(check);
  return canonical;
}

}  // namespace ppn::pairing
