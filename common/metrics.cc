#include "common/metrics.h"

#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace ppn::metrics {
namespace {

std::string EscapeHelp(const std::string& help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// As Go's strconv.FormatFloat(v, 'g', -1, 64), which Prometheus writes: the shortest exact form.
std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrFormat("%.0f", v);
  for (int precision = 6; precision < 17; ++precision) {  // the shortest that reads back exactly
    std::string text = absl::StrFormat("%.*g", precision, v);
    if (std::strtod(text.c_str(), nullptr) == v) return text;
  }
  return absl::StrFormat("%.17g", v);
}

std::string LabelText(const Labels& labels, const std::string& extra_name = "", const std::string& extra_value = "") {
  if (labels.empty() && extra_name.empty()) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    absl::StrAppend(&out, first ? "" : ",", k, "=\"", EscapeLabelValue(v), "\"");
    first = false;
  }
  if (!extra_name.empty()) absl::StrAppend(&out, first ? "" : ",", extra_name, "=\"", extra_value, "\"");
  return out + "}";
}

}  // namespace

const std::vector<double>& DefaultSecondsBuckets() {
  static const std::vector<double> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return kBuckets;
}

std::string EscapeLabelValue(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void Snapshot::Gauge(const std::string& name, const std::string& help, const Labels& labels, double value) {
  Sample& s = gauges_[name];
  s.help = help;
  s.values.emplace_back(labels, value);
}

Registry::Family& Registry::FamilyLocked(const std::string& name, const std::string& help, Type type) {
  auto [it, fresh] = families_.try_emplace(name);
  if (fresh) {
    it->second.type = type;
    it->second.help = help;
  }
  return it->second;
}

void Registry::CounterAdd(const std::string& name, const std::string& help, const Labels& labels, double by) {
  absl::MutexLock l(&mu_);
  FamilyLocked(name, help, Type::kCounter).values[labels] += by;
}

void Registry::GaugeSet(const std::string& name, const std::string& help, const Labels& labels, double value) {
  absl::MutexLock l(&mu_);
  FamilyLocked(name, help, Type::kGauge).values[labels] = value;
}

void Registry::Observe(const std::string& name, const std::string& help, const Labels& labels, double value,
                       const std::vector<double>& buckets) {
  absl::MutexLock l(&mu_);
  Histogram& h = FamilyLocked(name, help, Type::kHistogram).histograms[labels];
  if (h.bounds.empty()) {
    h.bounds = buckets;
    h.counts.assign(buckets.size(), 0);
  }
  for (size_t i = 0; i < h.bounds.size(); ++i) {
    if (value <= h.bounds[i]) {
      ++h.counts[i];
      break;
    }
  }
  h.sum += value;
  ++h.count;
}

void Registry::AddCollector(std::function<void(Snapshot&)> collect) {
  absl::MutexLock l(&mu_);
  collectors_.push_back(std::move(collect));
}

std::string Registry::Render() const {
  std::vector<std::function<void(Snapshot&)>> collectors;
  {
    absl::MutexLock l(&mu_);
    collectors = collectors_;
  }
  Snapshot snapshot;
  for (const auto& collect : collectors) collect(snapshot);

  std::string out;
  absl::MutexLock l(&mu_);
  auto header = [&](const std::string& name, const std::string& help, const char* type) {
    absl::StrAppend(&out, "# HELP ", name, " ", EscapeHelp(help), "\n# TYPE ", name, " ", type, "\n");
  };
  // Families by name, whether registered or collected; a name is rendered once.
  std::map<std::string, int> names;
  for (const auto& [name, _] : families_) names[name] = 0;
  for (const auto& [name, _] : snapshot.gauges_) names.emplace(name, 1);
  for (const auto& [name, source] : names) {
    if (source == 1) {
      const Snapshot::Sample& s = snapshot.gauges_.at(name);
      header(name, s.help, "gauge");
      for (const auto& [labels, v] : s.values) absl::StrAppend(&out, name, LabelText(labels), " ", Number(v), "\n");
      continue;
    }
    const Family& f = families_.at(name);
    switch (f.type) {
      case Type::kCounter:
      case Type::kGauge:
        header(name, f.help, f.type == Type::kCounter ? "counter" : "gauge");
        for (const auto& [labels, v] : f.values) absl::StrAppend(&out, name, LabelText(labels), " ", Number(v), "\n");
        break;
      case Type::kHistogram:
        header(name, f.help, "histogram");
        for (const auto& [labels, h] : f.histograms) {
          uint64_t cumulative = 0;
          for (size_t i = 0; i < h.bounds.size(); ++i) {
            cumulative += h.counts[i];
            absl::StrAppend(&out, name, "_bucket", LabelText(labels, "le", Number(h.bounds[i])), " ", cumulative, "\n");
          }
          absl::StrAppend(&out, name, "_bucket", LabelText(labels, "le", "+Inf"), " ", h.count, "\n");
          absl::StrAppend(&out, name, "_sum", LabelText(labels), " ", Number(h.sum), "\n");
          absl::StrAppend(&out, name, "_count", LabelText(labels), " ", h.count, "\n");
        }
        break;
    }
  }
  return out;
}

Registry& Default() {
  static Registry* registry = new Registry();
  return *registry;
}

}  // namespace ppn::metrics
