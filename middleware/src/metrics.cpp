#include "trellis/middleware/metrics.hpp"

#include <algorithm>
#include <bit>
#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>
#include <cmath>
#include <functional>
#include <tuple>

#include "prometheus/client_metric.h"
#include "prometheus/metric_type.h"
#include "prometheus/text_serializer.h"
#include "trellis/runtime.hpp"

namespace trellis {

namespace detail {

MethodMetrics::MethodMetrics(Side s, const MethodInfo& m, std::size_t buckets)
    : side(s),
      kind(m.kind),
      path(m.path),
      first_path_data(m.path.data()),
      service(m.service()),
      method(m.name()),
      latency_bucket_counts(new std::atomic<std::uint64_t>[buckets]) {
  for (std::size_t i = 0; i < buckets; ++i) latency_bucket_counts[i].store(0);
}

StatusCode code_of_exception(const Call& call, std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const boost::system::system_error& e) {
    if (e.code() == boost::asio::error::operation_aborted) return StatusCode::kCancelled;
  } catch (...) {
  }
  if (call.is_client()) return StatusCode::kUnknown;
  const ServerContext* ctx = call.server_context();
  return ctx != nullptr && ctx->is_cancelled() ? StatusCode::kCancelled : StatusCode::kInternal;
}

}  // namespace detail

namespace {

constexpr std::size_t kCodes = 17;

std::size_t code_index(StatusCode code) {
  auto i = static_cast<std::size_t>(code);
  return i < kCodes ? i : static_cast<std::size_t>(StatusCode::kUnknown);
}

std::size_t hash_of(Side side, std::string_view path) {
  return std::hash<std::string_view>{}(path) ^ (side == Side::kServer ? 0 : 0x9e3779b97f4a7c15ULL);
}

std::string_view type_label(RpcKind kind) {
  switch (kind) {
    case RpcKind::kUnary:
      return "unary";
    case RpcKind::kClientStreaming:
      return "client_stream";
    case RpcKind::kServerStreaming:
      return "server_stream";
    case RpcKind::kBidiStreaming:
      return "bidi_stream";
  }
  return "unary";
}

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

MetricFamily family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

// The labels of a method's series, in go-grpc-prometheus' order.
Labels method_labels(const detail::MethodMetrics& m) {
  return {{"grpc_type", std::string(type_label(m.kind))},
          {"grpc_service", m.service},
          {"grpc_method", m.method}};
}

ClientMetric counter(Labels labels, double value) {
  ClientMetric metric;
  metric.label = std::move(labels);
  metric.counter.value = value;
  return metric;
}

ClientMetric gauge(Labels labels, double value) {
  ClientMetric metric;
  metric.label = std::move(labels);
  metric.gauge.value = value;
  return metric;
}

// A histogram sample from per-bucket counts (not cumulative): counts[b] for each of `bounds`,
// then counts[bounds.size()] for those above every bound. The serializer adds the +Inf bucket,
// whose count is the sample count.
ClientMetric histogram(Labels labels, const std::vector<double>& bounds,
                       const std::uint64_t* counts, double sum) {
  ClientMetric metric;
  metric.label = std::move(labels);
  std::uint64_t cumulative = 0;
  for (std::size_t b = 0; b < bounds.size(); ++b) {
    cumulative += counts[b];
    metric.histogram.bucket.push_back({cumulative, bounds[b]});
  }
  metric.histogram.sample_count = cumulative + counts[bounds.size()];
  metric.histogram.sample_sum = sum;
  return metric;
}

// A consistent-enough reading of one entry, taken once per collection so that its families
// are read from the same numbers: a handled count never exceeds the started count. (A call
// ending during the reading may already be in the histogram and not yet in a handled count.)
struct Snapshot {
  const detail::MethodMetrics* entry;
  std::uint64_t started = 0;
  std::array<std::uint64_t, kCodes> handled{};
  std::uint64_t handled_total = 0;
  std::vector<std::uint64_t> buckets;
  std::uint64_t sum_ns = 0;
};

Snapshot take(const detail::MethodMetrics& m, std::size_t buckets) {
  Snapshot s;
  s.entry = &m;
  // The handled counts first, with acquire: each was incremented with release after its call's
  // started increment, so the started count read afterwards is at least their sum and the
  // in-flight gauge (started - handled) is never negative.
  for (std::size_t i = 0; i < kCodes; ++i) {
    s.handled[i] = m.handled[i].load(std::memory_order_acquire);
    s.handled_total += s.handled[i];
  }
  s.started = m.started.load(std::memory_order_relaxed);
  s.buckets.resize(buckets);
  for (std::size_t i = 0; i < buckets; ++i) {
    s.buckets[i] = m.latency_bucket_counts[i].load(std::memory_order_relaxed);
  }
  s.sum_ns = m.latency_sum_ns.load(std::memory_order_relaxed);
  return s;
}

// The four families of one side (`prefix` grpc_server or grpc_client), for the entries in
// `snaps`; none when there are no entries.
void append_side(std::vector<MetricFamily>& out, const std::vector<Snapshot>& snaps,
                 const std::vector<double>& bounds, const std::string& prefix,
                 const std::string& who) {
  if (snaps.empty()) return;

  MetricFamily started =
      family(prefix + "_started_total", "Total number of RPCs started on the " + who + ".",
             MetricType::Counter);
  for (const Snapshot& s : snaps) {
    started.metric.push_back(counter(method_labels(*s.entry), static_cast<double>(s.started)));
  }
  out.push_back(std::move(started));

  MetricFamily handled =
      family(prefix + "_handled_total",
             "Total number of RPCs completed on the " + who + ", regardless of success or failure.",
             MetricType::Counter);
  for (const Snapshot& s : snaps) {
    for (std::size_t c = 0; c < kCodes; ++c) {
      if (s.handled[c] == 0) continue;
      Labels labels = method_labels(*s.entry);
      labels.push_back({"grpc_code", status_code_name(static_cast<StatusCode>(c))});
      handled.metric.push_back(counter(std::move(labels), static_cast<double>(s.handled[c])));
    }
  }
  if (!handled.metric.empty()) out.push_back(std::move(handled));

  MetricFamily latency =
      family(prefix + "_handling_seconds",
             "Histogram of response latency (seconds) of gRPC calls completed on the " + who + ".",
             MetricType::Histogram);
  for (const Snapshot& s : snaps) {
    latency.metric.push_back(histogram(method_labels(*s.entry), bounds, s.buckets.data(),
                                       static_cast<double>(s.sum_ns) / 1e9));
  }
  out.push_back(std::move(latency));

  MetricFamily in_flight = family(
      prefix + "_in_flight", "Number of RPCs in progress on the " + who + ".", MetricType::Gauge);
  for (const Snapshot& s : snaps) {
    std::uint64_t running = s.started >= s.handled_total ? s.started - s.handled_total : 0;
    in_flight.metric.push_back(gauge(method_labels(*s.entry), static_cast<double>(running)));
  }
  out.push_back(std::move(in_flight));
}

// One family of a single series without labels.
MetricFamily single(std::string name, std::string help, MetricType type, double value) {
  MetricFamily f = family(std::move(name), std::move(help), type);
  f.metric.push_back(type == MetricType::Counter ? counter({}, value) : gauge({}, value));
  return f;
}

void append_runtime(std::vector<MetricFamily>& out, const RuntimeMetrics& rt) {
  auto number = [](auto v) { return static_cast<double>(v); };
  out.push_back(single("trellis_runtime_tasks_spawned_total",
                       "Tasks spawned on the Trellis runtime.", MetricType::Counter,
                       number(rt.tasks_spawned)));
  out.push_back(single("trellis_runtime_tasks_completed_total",
                       "Spawned tasks that have completed.", MetricType::Counter,
                       number(rt.tasks_completed)));
  out.push_back(single("trellis_runtime_tasks_failed_total",
                       "Spawned tasks that ended with an exception (aborted tasks included).",
                       MetricType::Counter, number(rt.tasks_failed)));
  out.push_back(single("trellis_runtime_tasks_alive", "Spawned tasks not yet completed.",
                       MetricType::Gauge, number(rt.tasks_alive)));
  out.push_back(single("trellis_runtime_blocking_threads", "Threads of the spawn_blocking pool.",
                       MetricType::Gauge, number(rt.blocking_threads)));
  out.push_back(single("trellis_runtime_server_calls",
                       "Incoming calls accepted and not yet finished.", MetricType::Gauge,
                       number(rt.server_calls)));
  out.push_back(single("trellis_runtime_client_calls", "Outgoing calls not yet freed.",
                       MetricType::Gauge, number(rt.client_calls)));
  out.push_back(single("trellis_runtime_tasks_unobserved_total",
                       "Spawned tasks that failed with nobody to join them (sent to the error "
                       "hook).",
                       MetricType::Counter, number(rt.tasks_unobserved)));
  out.push_back(single("trellis_runtime_blocking_threads_max",
                       "The bound of the spawn_blocking pool's threads.", MetricType::Gauge,
                       number(rt.blocking_threads_max)));
  out.push_back(single("trellis_runtime_blocking_queue_depth",
                       "spawn_blocking work waiting for a thread of the pool.", MetricType::Gauge,
                       number(rt.blocking_queue_depth)));
  if (rt.open_fds >= 0) {
    out.push_back(single("trellis_runtime_open_fds", "File descriptors open in the process.",
                         MetricType::Gauge, number(rt.open_fds)));
  }
  if (rt.fd_limit >= 0) {
    out.push_back(single("trellis_runtime_fd_limit",
                         "The process's limit on open file descriptors (RLIMIT_NOFILE, soft).",
                         MetricType::Gauge, number(rt.fd_limit)));
  }
  out.push_back(single("trellis_runtime_workers", "Worker threads of the runtime.",
                       MetricType::Gauge, number(rt.workers.size())));

  using Worker = RuntimeMetrics::WorkerMetrics;
  auto per_worker = [&](std::string name, std::string help, MetricType type, auto value_of) {
    MetricFamily f = family(std::move(name), std::move(help), type);
    for (std::size_t i = 0; i < rt.workers.size(); ++i) {
      Labels labels = {{"worker", std::to_string(i)}};
      double value = value_of(rt.workers[i]);
      f.metric.push_back(type == MetricType::Counter ? counter(std::move(labels), value)
                                                     : gauge(std::move(labels), value));
    }
    out.push_back(std::move(f));
  };
  auto seconds = [](std::chrono::nanoseconds d) {
    return std::chrono::duration<double>(d).count();
  };
  per_worker("trellis_runtime_worker_busy_seconds_total",
             "Time each worker spent running work, not waiting for events.", MetricType::Counter,
             [&](const Worker& w) { return seconds(w.busy_time); });
  per_worker("trellis_runtime_worker_polls_total",
             "Work each worker ran to its next suspension: queued runnables, completion-queue "
             "events and fired timers.",
             MetricType::Counter, [&](const Worker& w) { return number(w.polls); });
  MetricFamily poll_seconds =
      family("trellis_runtime_worker_poll_seconds", "Histogram of each worker's poll times.",
             MetricType::Histogram);
  std::vector<double> poll_bounds;
  for (auto bound : RuntimeMetrics::kPollTimeBounds) poll_bounds.push_back(seconds(bound));
  for (std::size_t i = 0; i < rt.workers.size(); ++i) {
    const Worker& w = rt.workers[i];
    poll_seconds.metric.push_back(histogram({{"worker", std::to_string(i)}}, poll_bounds,
                                            w.poll_time_histogram.data(), seconds(w.busy_time)));
  }
  out.push_back(std::move(poll_seconds));
  per_worker("trellis_runtime_worker_poll_max_seconds",
             "The longest single poll of each worker since the runtime started.", MetricType::Gauge,
             [&](const Worker& w) { return seconds(w.max_poll_time); });
  per_worker("trellis_runtime_worker_events_total", "Completion-queue events each worker handled.",
             MetricType::Counter, [&](const Worker& w) { return number(w.events); });
  per_worker("trellis_runtime_worker_queue_depth",
             "Runnables queued on each worker now (local queue and inbox).", MetricType::Gauge,
             [&](const Worker& w) { return number(w.queue_depth); });
  per_worker("trellis_runtime_worker_local_queue_depth",
             "Runnables each worker queued itself, ready to run.", MetricType::Gauge,
             [&](const Worker& w) { return number(w.local_queue_depth); });
  per_worker("trellis_runtime_worker_inbox_depth",
             "Runnables posted to each worker from other threads, not yet taken.",
             MetricType::Gauge, [&](const Worker& w) { return number(w.inbox_depth); });
  per_worker("trellis_runtime_worker_timers_pending",
             "Timers scheduled on each worker and not yet fired.", MetricType::Gauge,
             [&](const Worker& w) { return number(w.timers_pending); });
}

}  // namespace

MetricsRegistry::MetricsRegistry(MetricsOptions options)
    : bounds_(std::move(options.latency_buckets)), max_methods_(options.max_methods) {
  if (max_methods_ == 0) {
    throw std::invalid_argument("trellis::MetricsRegistry: max_methods must be positive");
  }
  // 2^40 methods is beyond any real service; the bound keeps the capacity arithmetic in range.
  if (max_methods_ > (std::size_t{1} << 40)) {
    throw std::invalid_argument("trellis::MetricsRegistry: max_methods is too large");
  }
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    double b = bounds_[i];
    if (!std::isfinite(b) || b <= 0 || (i > 0 && b <= bounds_[i - 1])) {
      throw std::invalid_argument(
          "trellis::MetricsRegistry: latency buckets must be positive, finite and strictly "
          "increasing");
    }
    bounds_ns_.push_back(static_cast<std::int64_t>(std::llround(b * 1e9)));
  }
  // At most half full, so that probing always ends at an empty slot after a few steps.
  capacity_ = std::bit_ceil(2 * max_methods_);
  table_.reset(new std::atomic<detail::MethodMetrics*>[capacity_]);
  for (std::size_t i = 0; i < capacity_; ++i) table_[i].store(nullptr);
}

MetricsRegistry::~MetricsRegistry() {
  for (std::size_t i = 0; i < capacity_; ++i) delete table_[i].load();
}

void MetricsRegistry::set_runtime(const Runtime* runtime) {
  std::lock_guard lock(runtime_mu_);
  runtime_ = runtime;
}

detail::MethodMetrics* MetricsRegistry::find_or_add(Side side, const MethodInfo& method) {
  const std::size_t mask = capacity_ - 1;
  std::size_t i = hash_of(side, method.path) & mask;
  std::unique_ptr<detail::MethodMetrics> fresh;  // made at most once, if the method is new
  for (;;) {
    detail::MethodMetrics* entry = table_[i].load(std::memory_order_acquire);
    if (entry == nullptr) {
      if (!fresh) {
        // Reserve room first: the table must stay at most half full.
        if (size_.fetch_add(1, std::memory_order_relaxed) >= max_methods_) {
          size_.fetch_sub(1, std::memory_order_relaxed);
          untracked_.fetch_add(1, std::memory_order_relaxed);
          return nullptr;
        }
        fresh = std::make_unique<detail::MethodMetrics>(side, method, bounds_.size() + 1);
      }
      if (table_[i].compare_exchange_strong(entry, fresh.get(), std::memory_order_acq_rel,
                                            std::memory_order_acquire)) {
        return fresh.release();
      }
      // Another thread filled this slot first; `entry` is now what it put there.
    }
    if (entry->side == side && entry->path == method.path) {
      if (fresh) size_.fetch_sub(1, std::memory_order_relaxed);
      return entry;
    }
    i = (i + 1) & mask;
  }
}

void MetricsRegistry::record_end(detail::MethodMetrics& entry, StatusCode code,
                                 std::chrono::steady_clock::duration elapsed) {
  std::int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count();
  if (ns < 0) ns = 0;
  // Prometheus buckets are inclusive upper bounds: the first bound >= the value.
  std::size_t bucket =
      std::lower_bound(bounds_ns_.begin(), bounds_ns_.end(), ns) - bounds_ns_.begin();
  entry.latency_bucket_counts[bucket].fetch_add(1, std::memory_order_relaxed);
  entry.latency_sum_ns.fetch_add(static_cast<std::uint64_t>(ns), std::memory_order_relaxed);
  // Last, with release: see take().
  entry.handled[code_index(code)].fetch_add(1, std::memory_order_release);
}

std::vector<MetricFamily> MetricsRegistry::Collect() const {
  std::vector<Snapshot> server, client;
  for (std::size_t i = 0; i < capacity_; ++i) {
    const detail::MethodMetrics* entry = table_[i].load(std::memory_order_acquire);
    if (entry == nullptr) continue;
    (entry->side == Side::kServer ? server : client).push_back(take(*entry, bounds_.size() + 1));
  }
  auto by_name = [](const Snapshot& a, const Snapshot& b) {
    return std::tie(a.entry->service, a.entry->method, a.entry->kind) <
           std::tie(b.entry->service, b.entry->method, b.entry->kind);
  };
  std::sort(server.begin(), server.end(), by_name);
  std::sort(client.begin(), client.end(), by_name);

  std::vector<MetricFamily> families;
  append_side(families, server, bounds_, "grpc_server", "server");
  append_side(families, client, bounds_, "grpc_client", "client");
  families.push_back(
      single("trellis_metrics_untracked_calls_total",
             "Calls not recorded because the metrics registry's method table was full.",
             MetricType::Counter, static_cast<double>(untracked_.load(std::memory_order_relaxed))));

  std::lock_guard lock(runtime_mu_);
  if (runtime_ != nullptr) append_runtime(families, runtime_->metrics());
  return families;
}

std::string MetricsRegistry::scrape() const {
  return prometheus::TextSerializer().Serialize(Collect());
}

// ------------------------------------------------------------------------------- the layer

detail::MethodMetrics* MetricsLayer::lookup(const Call& call) const {
  detail::MethodMetrics* cached = cache_.entry.load(std::memory_order_acquire);
  if (cached != nullptr && cached->first_path_data == call.method().path.data() &&
      cached->side == call.side() && cached->path.size() == call.method().path.size()) {
    return cached;
  }
  detail::MethodMetrics* entry = registry_->find_or_add(call.side(), call.method());
  if (entry != nullptr) cache_.entry.store(entry, std::memory_order_release);
  return entry;
}

HookDecision MetricsLayer::before(Call& call, State& state) const {
  detail::MethodMetrics* entry = lookup(call);
  if (entry == nullptr) return HookDecision::proceed();  // the registry's table is full
  state.registry_ = registry_.get();
  state.entry_ = entry;
  state.start_ = std::chrono::steady_clock::now();
  entry->started.fetch_add(1, std::memory_order_relaxed);
  return HookDecision::proceed();
}

void MetricsLayer::after(Call& call, State& state, CallOutcome& outcome) const {
  if (state.entry_ == nullptr) return;
  state.end(outcome.error ? detail::code_of_exception(call, outcome.error) : outcome.status.code());
}

void MetricsLayer::State::end(StatusCode code) {
  registry_->record_end(*entry_, code, std::chrono::steady_clock::now() - start_);
  entry_ = nullptr;
}

}  // namespace trellis
