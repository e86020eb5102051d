#include "trellis/middleware/metrics.hpp"

#include <algorithm>
#include <bit>
#include <boost/asio/error.hpp>
#include <boost/system/system_error.hpp>
#include <charconv>
#include <cmath>
#include <functional>
#include <tuple>
#include <type_traits>

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

// A label value, escaped as the text format requires: backslash, double quote and line feed.
void append_label_value(std::string& out, std::string_view value) {
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
}

void append_uint(std::string& out, std::uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void append_int(std::string& out, std::int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

// The shortest text that reads back as `v`, in %g style ("0.0001", "2.5", "1e+06"): the style Go
// clients use for `le` labels, so that series from Trellis and from Go services line up.
void append_double(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
    return;
  }
  if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
  out.append(buf, r.ptr);
}

// HELP and TYPE lines of one family. HELP texts here are constants without backslashes or line
// feeds, so they need no escaping.
void append_header(std::string& out, std::string_view name, std::string_view help,
                   std::string_view type) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

// `{grpc_type="...",grpc_service="...",grpc_method="..."` without the closing brace, so callers
// can add labels.
void append_method_labels(std::string& out, const detail::MethodMetrics& m) {
  out += "{grpc_type=\"";
  out += type_label(m.kind);
  out += "\",grpc_service=\"";
  append_label_value(out, m.service);
  out += "\",grpc_method=\"";
  append_label_value(out, m.method);
  out += '"';
}

// A consistent-enough reading of one entry, taken once per scrape so that all families of a
// scrape agree with each other (a handled count never exceeds the started count, the histogram
// count equals the sum of the handled counts).
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

std::string MetricsRegistry::scrape() const {
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

  std::string out;
  out.reserve(4096 + (server.size() + client.size()) * (bounds_.size() + 24) * 120);

  auto append_side = [&](const std::vector<Snapshot>& snaps, std::string_view prefix,
                         std::string_view who) {
    if (snaps.empty()) return;
    const std::string p(prefix);
    const std::string w(who);

    append_header(out, p + "_started_total", "Total number of RPCs started on the " + w + ".",
                  "counter");
    for (const Snapshot& s : snaps) {
      out += p + "_started_total";
      append_method_labels(out, *s.entry);
      out += "} ";
      append_uint(out, s.started);
      out += '\n';
    }

    bool any_handled = false;
    for (const Snapshot& s : snaps) any_handled = any_handled || s.handled_total > 0;
    if (any_handled) {
      append_header(out, p + "_handled_total",
                    "Total number of RPCs completed on the " + w +
                        ", regardless of success or "
                        "failure.",
                    "counter");
      for (const Snapshot& s : snaps) {
        for (std::size_t c = 0; c < kCodes; ++c) {
          if (s.handled[c] == 0) continue;
          out += p + "_handled_total";
          append_method_labels(out, *s.entry);
          out += ",grpc_code=\"";
          out += status_code_name(static_cast<StatusCode>(c));
          out += "\"} ";
          append_uint(out, s.handled[c]);
          out += '\n';
        }
      }
    }

    append_header(
        out, p + "_handling_seconds",
        "Histogram of response latency (seconds) of gRPC calls completed on the " + w + ".",
        "histogram");
    for (const Snapshot& s : snaps) {
      std::uint64_t cumulative = 0;
      for (std::size_t b = 0; b < s.buckets.size(); ++b) {
        cumulative += s.buckets[b];
        out += p + "_handling_seconds_bucket";
        append_method_labels(out, *s.entry);
        out += ",le=\"";
        append_double(out, b < bounds_.size() ? bounds_[b] : INFINITY);
        out += "\"} ";
        append_uint(out, cumulative);
        out += '\n';
      }
      out += p + "_handling_seconds_sum";
      append_method_labels(out, *s.entry);
      out += "} ";
      append_double(out, static_cast<double>(s.sum_ns) / 1e9);
      out += '\n';
      out += p + "_handling_seconds_count";
      append_method_labels(out, *s.entry);
      out += "} ";
      append_uint(out, cumulative);
      out += '\n';
    }

    append_header(out, p + "_in_flight", "Number of RPCs in progress on the " + w + ".", "gauge");
    for (const Snapshot& s : snaps) {
      out += p + "_in_flight";
      append_method_labels(out, *s.entry);
      out += "} ";
      append_uint(out, s.started >= s.handled_total ? s.started - s.handled_total : 0);
      out += '\n';
    }
  };
  append_side(server, "grpc_server", "server");
  append_side(client, "grpc_client", "client");

  append_header(out, "trellis_metrics_untracked_calls_total",
                "Calls not recorded because the metrics registry's method table was full.",
                "counter");
  out += "trellis_metrics_untracked_calls_total ";
  append_uint(out, untracked_.load(std::memory_order_relaxed));
  out += '\n';

  std::lock_guard lock(runtime_mu_);
  if (runtime_ == nullptr) return out;
  RuntimeMetrics rt = runtime_->metrics();
  auto single = [&](std::string_view name, std::string_view help, std::string_view type,
                    auto value) {
    append_header(out, name, help, type);
    out += name;
    out += ' ';
    if constexpr (std::is_signed_v<decltype(value)>) {
      append_int(out, static_cast<std::int64_t>(value));
    } else {
      append_uint(out, static_cast<std::uint64_t>(value));
    }
    out += '\n';
  };
  single("trellis_runtime_tasks_spawned_total", "Tasks spawned on the Trellis runtime.", "counter",
         rt.tasks_spawned);
  single("trellis_runtime_tasks_completed_total", "Spawned tasks that have completed.", "counter",
         rt.tasks_completed);
  single("trellis_runtime_tasks_failed_total",
         "Spawned tasks that ended with an exception (aborted tasks included).", "counter",
         rt.tasks_failed);
  single("trellis_runtime_tasks_alive", "Spawned tasks not yet completed.", "gauge",
         rt.tasks_alive);
  single("trellis_runtime_blocking_threads", "Threads of the spawn_blocking pool.", "gauge",
         rt.blocking_threads);
  single("trellis_runtime_server_calls", "Incoming calls accepted and not yet finished.", "gauge",
         rt.server_calls);
  single("trellis_runtime_client_calls", "Outgoing calls not yet freed.", "gauge", rt.client_calls);
  single("trellis_runtime_workers", "Worker threads of the runtime.", "gauge", rt.workers.size());

  auto per_worker = [&](std::string_view name, std::string_view help, std::string_view type,
                        auto value_of) {
    append_header(out, name, help, type);
    for (std::size_t i = 0; i < rt.workers.size(); ++i) {
      out += name;
      out += "{worker=\"";
      append_uint(out, i);
      out += "\"} ";
      value_of(rt.workers[i]);
      out += '\n';
    }
  };
  using Worker = RuntimeMetrics::WorkerMetrics;
  per_worker("trellis_runtime_worker_busy_seconds_total",
             "Time each worker spent running work, not waiting for events.", "counter",
             [&](const Worker& w) {
               append_double(out, std::chrono::duration<double>(w.busy_time).count());
             });
  per_worker("trellis_runtime_worker_events_total", "Completion-queue events each worker handled.",
             "counter", [&](const Worker& w) { append_uint(out, w.events); });
  per_worker("trellis_runtime_worker_queue_depth", "Runnables queued on each worker now.", "gauge",
             [&](const Worker& w) { append_uint(out, w.queue_depth); });
  return out;
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
