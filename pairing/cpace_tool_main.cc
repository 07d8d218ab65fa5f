// cpace_tool: computes CPace-X25519-SHA512 for given inputs, to compare this implementation
// with any other. All inputs and outputs are hex.
//
//   cpace_tool --prs=HEX --ci=HEX --sid=HEX --ya=HEX --ada=HEX --yb=HEX --adb=HEX

#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/escaping.h"
#include "pairing/cpace.h"

ABSL_FLAG(std::string, prs, "", "Password (hex)");
ABSL_FLAG(std::string, ci, "", "Channel identifier (hex)");
ABSL_FLAG(std::string, sid, "", "Session id (hex)");
ABSL_FLAG(std::string, ya, "", "Initiator scalar (hex, 32 bytes)");
ABSL_FLAG(std::string, ada, "", "Initiator associated data (hex)");
ABSL_FLAG(std::string, yb, "", "Responder scalar (hex, 32 bytes)");
ABSL_FLAG(std::string, adb, "", "Responder associated data (hex)");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto hex = [](const std::string& s) { return absl::HexStringToBytes(s); };
  auto out = [](const char* name, const std::string& bytes) {
    std::printf("%s %s\n", name, absl::BytesToHexString(bytes).c_str());
  };
  std::string prs = hex(absl::GetFlag(FLAGS_prs)), ci = hex(absl::GetFlag(FLAGS_ci)),
              sid = hex(absl::GetFlag(FLAGS_sid));
  std::string ya = hex(absl::GetFlag(FLAGS_ya)), yb = hex(absl::GetFlag(FLAGS_yb));
  std::string ada = hex(absl::GetFlag(FLAGS_ada)), adb = hex(absl::GetFlag(FLAGS_adb));
  std::string g = ppn::pairing::CalculateGenerator(prs, ci, sid);
  out("g", g);
  if (ya.size() != 32 || yb.size() != 32) {
    std::fprintf(stderr, "cpace_tool: --ya and --yb must be 32 bytes of hex\n");
    return 2;
  }
  auto Ya = ppn::pairing::ScalarMultVfy(ya, g), Yb = ppn::pairing::ScalarMultVfy(yb, g);
  if (!Ya.ok() || !Yb.ok()) return 1;
  auto K = ppn::pairing::ScalarMultVfy(ya, *Yb);
  if (!K.ok()) {
    std::fprintf(stderr, "cpace_tool: %s\n", std::string(K.status().message()).c_str());
    return 1;
  }
  std::string tir = ppn::pairing::TranscriptIr(*Ya, ada, *Yb, adb);
  std::string toc = ppn::pairing::TranscriptOc(*Ya, ada, *Yb, adb);
  out("Ya", *Ya);
  out("Yb", *Yb);
  out("K", *K);
  out("ISK_IR", ppn::pairing::Isk(sid, *K, tir));
  out("ISK_SY", ppn::pairing::Isk(sid, *K, toc));
  out("sid_output_ir", ppn::pairing::SidOutput(tir));
  out("sid_output_oc", ppn::pairing::SidOutput(toc));
  return 0;
}
