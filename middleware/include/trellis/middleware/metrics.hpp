// trellis::MetricsRegistry and trellis::MetricsLayer: per-method RPC metrics (and the runtime's
// own) for Prometheus. The registry is a prometheus::Collectable (prometheus-cpp), so it plugs
// into whatever already serves a program's prometheus-cpp metrics.
//
//   auto metrics = std::make_shared<trellis::MetricsRegistry>();
//   metrics->set_runtime(runtime.get());                    // trellis_runtime_* too
//   builder.layer(trellis::MetricsLayer(metrics));          // server side
//   auto channel = trellis::Channel::insecure(target).with_layer(trellis::MetricsLayer(metrics));
//
// Then serve it, one of:
//
//   // Trellis's own /metrics endpoint (Boost.Beast) on the runtime's I/O thread:
//   auto endpoint = trellis::MetricsServer::start(*runtime, metrics, "0.0.0.0:9464");
//   // a prometheus-cpp Exposer that already serves the program's own prometheus::Registry:
//   exposer.RegisterCollectable(metrics);
//   // or the text exposition itself (prometheus-cpp's TextSerializer):
//   std::string text = metrics->scrape();
//
// The metric names and labels are those of go-grpc-prometheus, so existing dashboards and alerts
// work unchanged:
//
//   grpc_server_started_total{grpc_type,grpc_service,grpc_method}            counter
//   grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}  counter
//   grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}         histogram
//   grpc_server_in_flight{grpc_type,grpc_service,grpc_method}                gauge
//   grpc_client_started_total, grpc_client_handled_total, grpc_client_handling_seconds,
//   grpc_client_in_flight: the same for calls made through a client stack.
//
// grpc_type is "unary", "client_stream", "server_stream" or "bidi_stream"; grpc_code is the
// status code's canonical name ("OK", "NOT_FOUND"). A handled series appears once a call has
// ended with that code. The runtime's metrics are listed at MetricsRegistry::set_runtime.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "trellis/call.hpp"
#include "trellis/hook_layer.hpp"
#include "trellis/method_info.hpp"
#include "trellis/status.hpp"
#include "trellis/task.hpp"

namespace trellis {

class Runtime;

// What a MetricsRegistry is built with.
struct MetricsOptions {
  // Upper bounds, in seconds, of the latency histograms' buckets (an implicit +Inf bucket
  // follows). Strictly increasing, positive and finite. The default spans 100 microseconds (a
  // loopback unary call) to 10 seconds; it extends Prometheus' default buckets downwards,
  // because a Trellis call is usually well under Prometheus' smallest bucket of 5 ms.
  std::vector<double> latency_buckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                         0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
  // How many distinct (side, method) pairs the registry tracks. The table is allocated once at
  // this size, so that it can be read without a lock; calls of methods beyond it are not
  // recorded and are counted in trellis_metrics_untracked_calls_total instead.
  std::size_t max_methods = 1024;
};

namespace detail {

// The metrics of one method on one side. Every field the hot path touches is an atomic updated
// with relaxed ordering: a scrape needs each counter to be exact eventually, not a consistent
// snapshot of all of them.
struct MethodMetrics {
  MethodMetrics(Side side, const MethodInfo& method, std::size_t buckets);

  Side side;
  RpcKind kind;
  std::string path;  // owned: the key; the caller's MethodInfo may be a temporary
  // The characters of the MethodInfo::path the entry was made for. Generated code's paths live
  // as long as the program, so a later call whose path has the same address is the same method:
  // MetricsLayer's cache compares this pointer instead of hashing the path.
  const char* first_path_data;
  std::string service;
  std::string method;
  std::atomic<std::uint64_t> started{0};
  // By status code; codes outside the 17 are counted as UNKNOWN.
  std::array<std::atomic<std::uint64_t>, 17> handled{};
  // Non-cumulative: latency_bucket_counts[i] counts the calls in (bound[i-1], bound[i]]; the last
  // one counts those above every bound. Collect() makes them cumulative.
  std::unique_ptr<std::atomic<std::uint64_t>[]> latency_bucket_counts;
  std::atomic<std::uint64_t> latency_sum_ns{0};
};

// The code a call whose service threw `error` is recorded with: see MetricsLayer.
StatusCode code_of_exception(const Call& call, std::exception_ptr error);

}  // namespace detail

class MetricsLayer;

// The metrics of every method seen through the MetricsLayers that share this registry, plus
// (optionally) a runtime's metrics. Thread-safe. Recording a call takes no lock: the per-method
// entries live in a fixed-size table that is looked up without locking and filled in with
// compare-and-swap the first time a method is seen; each counter is an atomic. Only reading the
// metrics (Collect(), scrape()) builds anything: the prometheus-cpp metric families, from a
// snapshot of the counters.
class MetricsRegistry : public prometheus::Collectable {
 public:
  // Throws std::invalid_argument if the options are invalid (buckets not strictly increasing,
  // not positive or not finite; max_methods zero).
  explicit MetricsRegistry(MetricsOptions options = {});
  ~MetricsRegistry() override;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Also exports `runtime`'s metrics (Runtime::metrics()) at each Collect() (and so each
  // scrape); nullptr stops. One runtime at a time. The runtime must outlive the registry's
  // collections: set nullptr before destroying it (set_runtime waits for a collection in
  // progress, so none reads the runtime after it returns). Exported (docs/runtime.md):
  //   counters trellis_runtime_tasks_spawned_total, _tasks_completed_total, _tasks_failed_total,
  //   _tasks_unobserved_total; gauges trellis_runtime_tasks_alive, _blocking_threads,
  //   _blocking_threads_max, _blocking_queue_depth, _server_calls, _client_calls, _open_fds and
  //   _fd_limit (each left out where unknown), _workers; and per worker, labelled {worker}:
  //   counters trellis_runtime_worker_busy_seconds_total, _polls_total, _events_total, the
  //   histogram trellis_runtime_worker_poll_seconds, gauges _poll_max_seconds, _queue_depth,
  //   _local_queue_depth, _inbox_depth and _timers_pending.
  void set_runtime(const Runtime* runtime);

  // prometheus::Collectable: the families listed at the top of this file and at set_runtime,
  // each that has a series (the others are left out), in a fixed order: server, then client
  // (started, handled, handling_seconds, in_flight), trellis_metrics_untracked_calls_total, the
  // runtime's. Series are sorted by service and method, labels in the order listed at the top.
  // Each method's counters are read once per collection, so a handled count never exceeds its
  // started count (the in-flight gauge is never negative). Safe to call concurrently with
  // recording and with other collections, from any thread.
  //
  // A prometheus::Exposer (or anything else that collects a list of Collectables) serves them
  // beside the program's own metrics; the names must not clash with the program's.
  std::vector<prometheus::MetricFamily> Collect() const override;

  // Collect(), in the Prometheus text format, version 0.0.4, by prometheus-cpp's TextSerializer.
  std::string scrape() const;

  // The content type of scrape()'s text, for an HTTP response.
  static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

  // The latency bucket bounds in use, in seconds.
  const std::vector<double>& latency_buckets() const { return bounds_; }

 private:
  // The recording side belongs to MetricsLayer (and its per-call State) alone.
  friend class MetricsLayer;

  // The entry of `method` on `side`, created on first use; nullptr when the table is full (the
  // call is then counted as untracked).
  detail::MethodMetrics* find_or_add(Side side, const MethodInfo& method);
  // Records the end of a call started on `entry`.
  void record_end(detail::MethodMetrics& entry, StatusCode code,
                  std::chrono::steady_clock::duration elapsed);

  std::vector<double> bounds_;
  std::vector<std::int64_t> bounds_ns_;  // the same bounds, for comparing without floating point
  std::size_t capacity_;                 // a power of two, >= 2 * max_methods
  std::size_t max_methods_;
  std::unique_ptr<std::atomic<detail::MethodMetrics*>[]> table_;
  std::atomic<std::size_t> size_{0};
  std::atomic<std::uint64_t> untracked_{0};
  mutable std::mutex runtime_mu_;  // guards runtime_; only Collect() and set_runtime take it
  const Runtime* runtime_ = nullptr;
};

// A layer that records, for each call through it, the metrics described at the top of this file
// in a MetricsRegistry. It works on both sides (server stacks and client stacks, per
// call.side()) and for every kind of call the stack carries; the latency is the time the inner
// service took, so put the layer outermost to measure what the peer sees, or inside a retry layer
// to count each attempt as a call.
//
// A call whose inner service throws is recorded, then the exception goes on. It is recorded as
// CANCELLED if the exception is Asio's operation_aborted (the task was aborted) or, on the
// server, if the call was cancelled; otherwise as INTERNAL on the server (what the framework
// answers for a handler that threw) and as UNKNOWN on the client (the caller gets the exception,
// not a status). A call
// whose coroutine is destroyed before it ends (the runtime shutting down) is recorded as
// CANCELLED, so in-flight gauges always return to zero.
//
// The per-call cost: two clock reads, a comparison with the entry the layer used last (the
// method path is hashed only when that entry is another method's) and four relaxed atomic
// increments; no lock and no allocation (after a method's first call). Reading the metrics
// (MetricsRegistry::Collect) never blocks a call.
class MetricsLayer : public HookLayerBase<MetricsLayer> {
 public:
  // Throws std::invalid_argument if `registry` is null.
  explicit MetricsLayer(std::shared_ptr<MetricsRegistry> registry)
      : registry_(std::move(registry)) {
    if (!registry_) throw std::invalid_argument("trellis::MetricsLayer: null registry");
  }

  const std::shared_ptr<MetricsRegistry>& registry() const { return registry_; }

  // A hook layer (hook_layer.hpp): no coroutine frame of its own.
  class State {
   public:
    State() = default;
    State(const State&) = delete;
    State& operator=(const State&) = delete;
    // A call whose frame goes before it ends (the runtime shutting down) counts as CANCELLED.
    ~State() {
      if (entry_ != nullptr) end(StatusCode::kCancelled);
    }

   private:
    friend class MetricsLayer;
    void end(StatusCode code);

    MetricsRegistry* registry_ = nullptr;
    detail::MethodMetrics* entry_ = nullptr;
    std::chrono::steady_clock::time_point start_;
  };
  HookDecision before(Call& call, State& state) const;
  void after(Call& call, State& state, CallOutcome& outcome) const;

 private:
  // On the server a stack serves one method, so the entry of its last call is nearly always the
  // one: checked by the address of the method's path, which lives as long as the server.
  struct Cache {
    Cache() = default;
    Cache(const Cache&) {}
    Cache& operator=(const Cache&) { return *this; }
    mutable std::atomic<detail::MethodMetrics*> entry{nullptr};
  };
  detail::MethodMetrics* lookup(const Call& call) const;

  std::shared_ptr<MetricsRegistry> registry_;
  Cache cache_;
};
static_assert(HookLayer<MetricsLayer>);

}  // namespace trellis
