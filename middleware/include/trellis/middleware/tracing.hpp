// trellis::TracingLayer: a span per call, on the server and the client, with the W3C trace
// context carried across hops in `traceparent` / `tracestate` metadata.
#pragma once

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "trellis/call.hpp"
#include "trellis/hook_layer.hpp"
#include "trellis/middleware/span.hpp"
#include "trellis/middleware/span_exporter.hpp"
#include "trellis/middleware/trace_context.hpp"
#include "trellis/server_context.hpp"
#include "trellis/status.hpp"
#include "trellis/task.hpp"

namespace trellis {

struct TracingOptions {
  // The `service.name` resource of every span. Empty: "unknown_service:" and the program's name
  // ("unknown_service:my_server"), the default OpenTelemetry's resource conventions give.
  std::string service_name;
  // Sampling follows the W3C "sampled" flag, like OpenTelemetry's default parent-based sampler:
  // a trace this layer starts is sampled; a continued trace keeps its caller's decision, and a
  // span of an unsampled trace is not exported (its context still propagates). True exports
  // every span regardless of the flag.
  bool export_unsampled = false;
};

// The trace context of the server span of the call `ctx` serves: its trace id and its own span
// id, for the handler's logging (`current_trace(ctx)->trace_id.hex()`). nullptr when no
// TracingLayer runs on the server for this call, or once the layer has returned.
const TraceContext* current_trace(const ServerContext& ctx);

namespace detail {

struct TracingConfig {
  std::shared_ptr<SpanExporter> exporter;
  TracingOptions options;
};

// One span being recorded, kept in the traced call's coroutine frame. Not for direct use.
class ActiveSpan {
 public:
  // Starts the span: picks its parent, and on the server publishes its context to the handler
  // (current_trace), on the client writes `traceparent`/`tracestate` into the call's metadata.
  ActiveSpan(const TracingConfig& config, Call& call);
  ActiveSpan(const ActiveSpan&) = delete;
  ActiveSpan& operator=(const ActiveSpan&) = delete;

  // Ends the span with the call's final status and exports it.
  void finish(Call& call, const Status& status);
  // Ends the span of a call whose inner service threw `error`.
  void finish(Call& call, const std::exception_ptr& error);

 private:
  void end(Call& call, StatusCode code, std::string_view message);

  const TracingConfig* config_;
  Span span_;
  // Server side: the trace context current_trace() gave before this span began (an outer tracing
  // layer's), restored when it ends.
  const TraceContext* previous_ = nullptr;
};

}  // namespace detail

// The tracing layer. On either side it records one span per call, named
// "package.Service/Method", with OpenTelemetry's RPC attributes (see Span::attributes), and hands
// it to the exporter when the call ends. Put it outermost (or just inside a timeout layer), so
// that its span covers what the other layers do.
//
// Server: continues the trace of a valid incoming `traceparent` (the span is a child of the
// client's span, `tracestate` is kept), or starts a new trace; the span's context is available to
// the handler through current_trace(ctx) until the handler returns.
//
// Client: the span is a child of the handler's server span when the call is made with
// CallOptions::set_parent(ctx) (or of the trace in the parent call's `traceparent` when that
// server has no tracing layer), else it starts a new trace; the layer adds `traceparent` (and
// `tracestate`, if any) to the call's metadata. If the metadata already carries a `traceparent`
// (set by the caller, or by this layer on an earlier attempt when it sits inside a retry layer),
// the span becomes a child of that context and the header is left as it is: put the tracing
// layer outside the retry layer to get one client span per call.
//
// A streaming call gets one span for the whole stream.
//
// Cost per call: two clock reads, a few random numbers, the span's strings (only for sampled
// spans), the exporter's export_span; no lock.
class TracingLayer : public HookLayerBase<TracingLayer> {
 public:
  explicit TracingLayer(std::shared_ptr<SpanExporter> exporter, TracingOptions options = {});

  // A hook layer (hook_layer.hpp): no coroutine frame of its own.
  struct State {
    std::optional<detail::ActiveSpan> span;
  };
  HookDecision before(Call& call, State& state) const;
  // Ends the span with the call's status; a call whose service threw is recorded as INTERNAL
  // (CANCELLED for a cancelled server call), and the exception goes on to whoever handles it (on
  // the server, the framework answers INTERNAL).
  void after(Call& call, State& state, CallOutcome& outcome) const;

 private:
  std::shared_ptr<const detail::TracingConfig> config_;
};

static_assert(HookLayer<TracingLayer>);

}  // namespace trellis
