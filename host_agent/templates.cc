#include "host_agent/templates.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"
#include "openssl/evp.h"
#include "openssl/rand.h"

namespace ppn::host {
namespace {

// The template files a manifest vouches for. The memory file is large: its digest is checked
// once per change of the file, the small ones on every use.
constexpr const char* kSmallFiles[] = {"state", "disk.qcow2", "seed.iso"};
constexpr const char* kMemoryFile = "memory";

std::string Hex(const unsigned char* p, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) absl::StrAppendFormat(&out, "%02x", p[i]);
  return out;
}

std::string Sha256Of(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return Hex(md, len);
}

absl::StatusOr<std::string> HashFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", strerror(errno)));
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::string buf(1 << 20, '\0');
  ssize_t n;
  while ((n = read(fd, buf.data(), buf.size())) > 0) EVP_DigestUpdate(ctx, buf.data(), static_cast<size_t>(n));
  close(fd);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  if (n < 0) return absl::DataLossError(absl::StrCat("cannot read ", path));
  return Hex(md, len);
}

bool RandomBytes(unsigned char* p, size_t n) { return RAND_bytes(p, static_cast<int>(n)) == 1; }

}  // namespace

absl::StatusOr<std::string> FileDigests::Sha256(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return absl::NotFoundError(absl::StrCat(path, " is missing"));
  Seen now{static_cast<uint64_t>(st.st_size), int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec, st.st_ino,
           ""};
  {
    absl::MutexLock l(&mu_);
    auto it = seen_.find(path);
    if (it != seen_.end() && it->second.size == now.size && it->second.mtime_ns == now.mtime_ns &&
        it->second.inode == now.inode) {
      return it->second.digest;
    }
  }
  PPN_ASSIGN_OR_RETURN(now.digest, HashFile(path));
  absl::MutexLock l(&mu_);
  seen_[path] = now;
  return now.digest;
}

absl::StatusOr<std::string> TemplateKey(const TemplateParams& p, FileDigests* digests) {
  nlohmann::json j = {{"image", p.image.name},
                      {"base_format", p.image.base_format},
                      {"append", p.image.append},
                      {"vcpus", p.vcpus},
                      {"memory_mib", p.memory_mib},
                      {"disk_gib", p.disk_gib},
                      {"accel", p.kvm ? "kvm" : "tcg"},
                      {"qemu", p.qemu_version},
                      {"devices", p.devices}};
  for (const auto& [name, path] : std::vector<std::pair<const char*, std::string>>{
           {"base_image", p.image.base_image}, {"kernel", p.image.kernel}, {"initrd", p.image.initrd}}) {
    if (path.empty()) continue;
    PPN_ASSIGN_OR_RETURN(std::string digest, digests->Sha256(path));
    j[std::string(name) + "_sha256"] = digest;
  }
  return Sha256Of(j.dump()).substr(0, 32);
}

absl::StatusOr<Template> TemplateStore::Find(const std::string& key) {
  Template t{key, "", dir_ + "/" + key};
  absl::StatusOr<std::string> text = ReadFile(t.dir + "/manifest.json");
  if (!text.ok()) {
    if (!std::filesystem::exists(t.dir)) return absl::NotFoundError(absl::StrCat("no template ", key));
    Remove(key);
    return absl::DataLossError(absl::StrCat("template ", key, " has no manifest"));
  }
  nlohmann::json m = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  auto damaged = [&](const std::string& why) {
    Remove(key);
    return absl::DataLossError(absl::StrCat("template ", key, " is damaged: ", why));
  };
  if (!m.is_object() || m.value("key", "") != key || !m.contains("sha256") || !m["sha256"].is_object()) {
    return damaged("unreadable manifest");
  }
  t.image = m.value("image", "");
  std::vector<std::string> files(std::begin(kSmallFiles), std::end(kSmallFiles));
  files.push_back(kMemoryFile);
  for (const std::string& f : files) {
    std::string want = m["sha256"].value(f, "");
    absl::StatusOr<std::string> got = digests_.Sha256(t.dir + "/" + f);
    if (!got.ok()) return damaged(absl::StrCat(f, " is missing"));
    if (want.empty() || *got != want) return damaged(absl::StrCat(f, " does not match its digest"));
  }
  return t;
}

absl::StatusOr<std::string> TemplateStore::NewBuildDir(const std::string& key) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  chmod(dir_.c_str(), 0755);  // QEMU, as its own user, reads a template's disk and seed
  for (int n = 0; n < 1000; ++n) {
    std::string dir = absl::StrCat(dir_, "/.build-", key, "-", getpid(), "-", n);
    if (mkdir(dir.c_str(), 0755) == 0) return dir;
    if (errno != EEXIST) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", strerror(errno)));
  }
  return absl::InternalError(absl::StrCat("cannot create a build directory in ", dir_));
}

absl::StatusOr<Template> TemplateStore::Install(const std::string& build_dir, const std::string& key,
                                                const std::string& image) {
  auto made = [&]() -> absl::StatusOr<Template> {
    nlohmann::json m = {{"key", key}, {"image", image}, {"sha256", nlohmann::json::object()}};
    std::vector<std::string> files(std::begin(kSmallFiles), std::end(kSmallFiles));
    files.push_back(kMemoryFile);
    for (const std::string& f : files) {
      absl::StatusOr<std::string> digest = digests_.Sha256(build_dir + "/" + f);
      if (!digest.ok()) return absl::InternalError(absl::StrCat("template ", key, ": ", digest.status().message()));
      m["sha256"][f] = *digest;
    }
    PPN_RETURN_IF_ERROR(WriteFileAtomically(build_dir + "/manifest.json", m.dump(2) + "\n"));
    std::string dir = dir_ + "/" + key;
    Remove(key);
    if (rename(build_dir.c_str(), dir.c_str()) != 0) {
      return absl::InternalError(absl::StrCat("cannot install template ", key, ": ", strerror(errno)));
    }
    // The digests were taken of the build directory's paths; the rename keeps the inodes.
    PPN_ASSIGN_OR_RETURN(Template t, Find(key));
    return t;
  }();
  std::error_code ec;
  std::filesystem::remove_all(build_dir, ec);
  return made;
}

void TemplateStore::Remove(const std::string& key) {
  std::error_code ec;
  // Renamed away first: a half-removed template is never mistaken for one.
  std::string doomed = absl::StrCat(dir_, "/.remove-", key, "-", getpid());
  if (rename((dir_ + "/" + key).c_str(), doomed.c_str()) == 0) std::filesystem::remove_all(doomed, ec);
}

void TemplateStore::SweepBuilds() {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::string name = e.path().filename().string();
    if (absl::StartsWith(name, ".build-") || absl::StartsWith(name, ".remove-")) {
      std::filesystem::remove_all(e.path(), ec);
    }
  }
}

std::vector<std::string> TemplateStore::Keys() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::string name = e.path().filename().string();
    if (!absl::StartsWith(name, ".")) out.push_back(name);
  }
  return out;
}

std::string EncodeIdentity(const GuestIdentity& id) {
  std::string out = absl::StrCat("hostname ", id.hostname, "\nseed ", id.seed_hex, "\n");
  if (!id.user_data.empty()) absl::StrAppend(&out, "user-data ", absl::Base64Escape(id.user_data), "\n");
  return out + "end\n";
}

absl::StatusOr<GuestIdentity> NewIdentity(const std::string& hostname, const std::string& user_data) {
  unsigned char seed[32];
  if (!RandomBytes(seed, sizeof(seed))) return absl::InternalError("no randomness for a guest seed");
  return GuestIdentity{hostname, Hex(seed, sizeof(seed)), user_data};
}

std::string NewVmGenerationId() {
  unsigned char b[16];
  if (!RandomBytes(b, sizeof(b))) return "";
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  std::string h = Hex(b, sizeof(b));
  return absl::StrCat(h.substr(0, 8), "-", h.substr(8, 4), "-", h.substr(12, 4), "-", h.substr(16, 4), "-",
                      h.substr(20));
}

absl::StatusOr<int> ConnectIdentityChannel(const std::string& socket_path, absl::Duration timeout) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("socket path too long: ", socket_path));
  }
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return absl::InternalError("socket() failed");
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return fd;
    close(fd);
    if (absl::Now() >= deadline) {
      return absl::UnavailableError(absl::StrCat("the identity channel ", socket_path, " does not answer"));
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
}

absl::Status WaitForChannelLine(int fd, const std::string& prefix, absl::Duration timeout, std::string* found) {
  absl::Time deadline = absl::Now() + timeout;
  std::string buffer;
  while (true) {
    size_t nl;
    while ((nl = buffer.find('\n')) != std::string::npos) {
      std::string line = buffer.substr(0, nl);
      buffer.erase(0, nl + 1);
      if (absl::StartsWith(line, prefix)) {
        if (found != nullptr) *found = line;
        return absl::OkStatus();
      }
    }
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          absl::StrCat("the guest did not say ", prefix, " within ", absl::FormatDuration(timeout)));
    }
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(std::max<int64_t>(1, absl::ToInt64Milliseconds(left))));
    if (r < 0 && errno != EINTR) return absl::InternalError("poll() failed");
    if (r <= 0) continue;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return absl::UnavailableError("the identity channel closed");
    buffer.append(buf, static_cast<size_t>(n));
    if (buffer.size() > (1 << 16)) buffer.erase(0, buffer.size() - 4096);  // a chatty guest
  }
}

absl::Status WriteChannel(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError("the identity channel closed");
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

namespace {

absl::Status SetIgnoreShared(QmpClient* qmp, bool on) {
  return qmp
      ->Execute("migrate-set-capabilities",
                {{"capabilities", nlohmann::json::array({{{"capability", "x-ignore-shared"}, {"state", on}}})}})
      .status();
}

}  // namespace

absl::Status SaveTemplateState(QmpClient* qmp, int state_fd, absl::Duration timeout) {
  PPN_RETURN_IF_ERROR(qmp->Execute("stop").status());
  // The RAM is in the shared memory file already: only device state goes to the stream.
  PPN_RETURN_IF_ERROR(SetIgnoreShared(qmp, true));
  PPN_RETURN_IF_ERROR(qmp->ExecuteWithFd("getfd", {{"fdname", "ppn-template"}}, state_fd).status());
  PPN_RETURN_IF_ERROR(qmp->Execute("migrate", {{"uri", "fd:ppn-template"}}).status());
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    PPN_ASSIGN_OR_RETURN(nlohmann::json info, qmp->Execute("query-migrate"));
    std::string status = info.value("status", "");
    if (status == "completed") return absl::OkStatus();
    if (status == "failed" || status == "cancelled") {
      return absl::FailedPreconditionError(
          absl::StrCat("QEMU could not save the template: ", info.value("error-desc", status)));
    }
    if (absl::Now() >= deadline) return absl::DeadlineExceededError("saving the template took too long");
    absl::SleepFor(absl::Milliseconds(2));
  }
}

absl::Status LoadTemplateState(QmpClient* qmp, int state_fd, absl::Duration timeout) {
  PPN_RETURN_IF_ERROR(SetIgnoreShared(qmp, true));  // as saved: the stream says so and QEMU checks
  PPN_RETURN_IF_ERROR(qmp->ExecuteWithFd("getfd", {{"fdname", "ppn-template"}}, state_fd).status());
  PPN_RETURN_IF_ERROR(qmp->Execute("migrate-incoming", {{"uri", "fd:ppn-template"}}).status());
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    PPN_ASSIGN_OR_RETURN(nlohmann::json st, qmp->Execute("query-status"));
    std::string status = st.value("status", "");
    if (status == "paused") break;
    if (status != "inmigrate") {
      PPN_ASSIGN_OR_RETURN(nlohmann::json info, qmp->Execute("query-migrate"));
      return absl::FailedPreconditionError(
          absl::StrCat("QEMU could not load the template (", status, "): ", info.value("error-desc", "")));
    }
    if (absl::Now() >= deadline) return absl::DeadlineExceededError("loading the template took too long");
    absl::SleepFor(absl::Milliseconds(1));
  }
  PPN_ASSIGN_OR_RETURN(nlohmann::json info, qmp->Execute("query-migrate"));
  if (info.value("status", "") == "failed") {
    return absl::FailedPreconditionError(
        absl::StrCat("QEMU could not load the template: ", info.value("error-desc", "")));
  }
  // The clone's own RAM is private: a later live migration sends all of it.
  return SetIgnoreShared(qmp, false);
}

}  // namespace ppn::host
