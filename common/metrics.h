#pragma once

// Prometheus metrics of one process: counters, gauges and histograms by label, and collectors
// that report gauges computed at scrape time (VMs by state, a spool's depth), rendered in the
// Prometheus text exposition format 0.0.4. Debian 12 ships no Prometheus C++ client; this is
// the one writer every service uses. Thread-safe.
//
// Labels are for bounded sets (method, code, node, state): never a tenant's token, key,
// user-data or any value a tenant chooses freely.

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace ppn::metrics {

// Label names and values, in the order they are rendered.
using Labels = std::vector<std::pair<std::string, std::string>>;

// Histogram bucket upper bounds for durations in seconds (go-grpc-prometheus' defaults).
const std::vector<double>& DefaultSecondsBuckets();

// What a collector reports at scrape time.
class Snapshot {
 public:
  void Gauge(const std::string& name, const std::string& help, const Labels& labels, double value);

 private:
  friend class Registry;
  struct Sample {
    std::string help;
    std::vector<std::pair<Labels, double>> values;
  };
  std::map<std::string, Sample> gauges_;
};

class Registry {
 public:
  void CounterAdd(const std::string& name, const std::string& help, const Labels& labels, double by = 1);
  void GaugeSet(const std::string& name, const std::string& help, const Labels& labels, double value);
  void Observe(const std::string& name, const std::string& help, const Labels& labels, double value,
               const std::vector<double>& buckets = DefaultSecondsBuckets());
  // `collect` runs on every scrape (on the scraping thread); it must not call back into the
  // registry.
  void AddCollector(std::function<void(Snapshot&)> collect);
  // The text exposition format: HELP and TYPE once per family, families sorted by name.
  std::string Render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Histogram {
    std::vector<double> bounds;
    std::vector<uint64_t> counts;  // per bucket, not cumulative
    double sum = 0;
    uint64_t count = 0;
  };
  struct Family {
    Type type;
    std::string help;
    std::map<Labels, double> values;
    std::map<Labels, Histogram> histograms;
  };
  Family& FamilyLocked(const std::string& name, const std::string& help, Type type) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, Family> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void(Snapshot&)>> collectors_ ABSL_GUARDED_BY(mu_);
};

// The process's registry: what --metrics_listen serves.
Registry& Default();

// A label value or HELP text as the exposition format needs it (backslash, quote, newline).
std::string EscapeLabelValue(const std::string& value);

}  // namespace ppn::metrics
