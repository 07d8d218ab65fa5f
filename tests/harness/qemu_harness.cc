#include "tests/harness/qemu_harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/process.h"
#include "host_agent/vm_network.h"

namespace ppn::testing {

namespace {

std::vector<pid_t> PidsMentioning(const std::string& needle) {
  std::vector<pid_t> out;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return out;
  while (dirent* d = readdir(proc)) {
    pid_t pid = static_cast<pid_t>(std::atoi(d->d_name));
    if (pid <= 0 || pid == getpid()) continue;
    std::string cmd = ReadAll("/proc/" + std::string(d->d_name) + "/cmdline");
    std::string stat = ReadAll("/proc/" + std::string(d->d_name) + "/stat");
    size_t paren = stat.rfind(')');
    if (paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z') continue;
    if (absl::StrContains(cmd, needle)) out.push_back(pid);
  }
  closedir(proc);
  return out;
}

// The network scopes of the agents started under each GuestDir, removed with it: a test that
// kills its agents leaves no namespace, claim or nftables table behind.
absl::Mutex scopes_mu;
std::map<std::string, std::set<std::string>>* scopes_by_dir = new std::map<std::string, std::set<std::string>>();

}  // namespace

int KillProcessesMentioning(const std::string& needle) {
  std::vector<pid_t> pids = PidsMentioning(needle);
  for (pid_t p : pids) kill(p, SIGKILL);
  return static_cast<int>(pids.size());
}

int CountProcessesMentioning(const std::string& needle) { return static_cast<int>(PidsMentioning(needle).size()); }

GuestDir::GuestDir() {
  char tmpl[] = "/tmp/ppnq-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
  chmod(path_.c_str(), 0755);  // QEMU may run as an unprivileged user
  for (const char* f : {"vmlinuz", "initramfs.cpio.gz", "base.qcow2"}) {
    std::filesystem::copy_file(RunfilePath(std::string("tools/test_guest/") + f), path_ + "/" + f);
    chmod((path_ + "/" + f).c_str(), 0644);
  }
  std::ofstream(catalog()) << "{\"images\": {\"ppn-test-guest\": {\"base_image\": \"" << path_
                           << "/base.qcow2\", \"kernel\": \"" << path_ << "/vmlinuz\", \"initrd\": \"" << path_
                           << "/initramfs.cpio.gz\", \"append\": \"console=ttyS0 panic=-1 quiet\"}}}\n";
}

GuestDir::~GuestDir() {
  KillProcessesMentioning(path_);
  absl::SleepFor(absl::Milliseconds(100));
  std::set<std::string> scopes;
  {
    absl::MutexLock l(&scopes_mu);
    scopes.swap((*scopes_by_dir)[path_]);
    scopes_by_dir->erase(path_);
  }
  ppn::CommandRunner run = ppn::SpawnerCommandRunner(ppn::PosixProcessSpawner::Get());
  for (const std::string& scope : scopes) ppn::host::RemoveNetworkScope(scope, run);
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

AgentProcess StartAgent(TestPki& pki, const std::string& dir, const std::string& catalog, const std::string& node_id,
                        const std::vector<std::string>& extra) {
  TlsFiles tls = pki.Issue("host", node_id);
  AgentProcess agent;
  agent.state_dir = dir + "/" + node_id;
  {
    absl::MutexLock l(&scopes_mu);
    (*scopes_by_dir)[dir].insert(ppn::host::NetworkScope(node_id, agent.state_dir));
  }
  std::filesystem::create_directories(agent.state_dir);
  std::string port_file = agent.state_dir + "/port";
  std::filesystem::remove(port_file);
  std::vector<std::string> argv = {RunfilePath("host_agent/host_agent"),
                                   "--mesh=" + pki.mesh(),
                                   "--listen=127.0.0.1:0",
                                   "--tls_ca=" + tls.ca_cert,
                                   "--tls_cert=" + tls.cert,
                                   "--tls_key=" + tls.key,
                                   "--node_id=" + node_id,
                                   "--state_dir=" + agent.state_dir,
                                   "--catalog=" + catalog,
                                   "--port_file=" + port_file,
                                   "--heartbeat_interval=500ms"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  agent.process = std::make_unique<Subprocess>(argv, agent.state_dir + "/agent.log");
  agent.port = WaitForPortFile(port_file, absl::Seconds(60));
  return agent;
}

AgentProcess StartService(TestPki& pki, const std::string& dir, const std::string& binary, const std::string& role,
                          const std::string& name, const std::vector<std::string>& extra) {
  TlsFiles tls = pki.Issue(role, name);
  AgentProcess p;
  p.state_dir = dir + "/" + name;
  std::filesystem::create_directories(p.state_dir);
  std::string port_file = p.state_dir + "/port";
  std::filesystem::remove(port_file);
  std::vector<std::string> argv = {RunfilePath(binary),       "--mesh=" + pki.mesh(),   "--listen=127.0.0.1:0",
                                   "--tls_ca=" + tls.ca_cert, "--tls_cert=" + tls.cert, "--tls_key=" + tls.key,
                                   "--port_file=" + port_file};
  argv.insert(argv.end(), extra.begin(), extra.end());
  p.process = std::make_unique<Subprocess>(argv, p.state_dir + "/service.log");
  p.port = WaitForPortFile(port_file, absl::Seconds(30));
  return p;
}

std::string HttpGet(int port, const std::string& path, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    std::string body;
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      std::string req = "GET " + path + " HTTP/1.0\r\nHost: guest\r\n\r\n";
      if (write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
        std::string resp;
        char buf[4096];
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0) resp.append(buf, n);
        size_t split = resp.find("\r\n\r\n");
        if (absl::StartsWith(resp, "HTTP/1.") && absl::StrContains(resp.substr(0, 16), " 200") &&
            split != std::string::npos) {
          body = resp.substr(split + 4);
        }
      }
    }
    close(fd);
    if (!body.empty()) return body;
    absl::SleepFor(absl::Milliseconds(200));
  }
  return "";
}

bool WaitForFileContaining(const std::string& file, const std::string& marker, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (absl::StrContains(ReadAll(file), marker)) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return false;
}

}  // namespace ppn::testing
