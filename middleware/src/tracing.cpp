// trellis::TracingLayer: the span of each call, its parent, and the W3C headers it reads and
// writes.
#include "trellis/middleware/tracing.hpp"

#include <errno.h>  // program_invocation_short_name

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"

namespace trellis {

namespace {

// What the server tracing layer stores in the call's extensions: the context of the span being
// recorded, which lives in the layer's coroutine frame. A pointer, so that publishing it does not
// allocate; the layer resets it before its frame goes.
struct ServerTraceSlot {
  const TraceContext* context = nullptr;
};

// The valid trace context in `metadata`'s traceparent, with its tracestate; nullopt if none.
std::optional<TraceContext> read_incoming(const Metadata& metadata) {
  std::optional<std::string_view> header = metadata.get(kTraceparentKey);
  if (!header) return std::nullopt;
  std::optional<TraceContext> context = parse_traceparent(*header);
  if (context) context->tracestate = join_tracestate(metadata.get_all(kTracestateKey));
  return context;
}

// The same, read in place from what the server received: the server layer runs on every call,
// and most calls carry no trace, so it does not build ServerContext::request_metadata().
std::optional<TraceContext> read_incoming(const ServerContext& ctx) {
  std::optional<std::string_view> header = ctx.request_metadata_value(kTraceparentKey);
  if (!header) return std::nullopt;
  std::optional<TraceContext> context = parse_traceparent(*header);
  if (context) context->tracestate = join_tracestate(ctx.request_metadata_values(kTracestateKey));
  return context;
}

}  // namespace

const TraceContext* current_trace(const ServerContext& ctx) {
  const auto* slot = ctx.extensions().get<ServerTraceSlot>();
  return slot != nullptr ? slot->context : nullptr;
}

namespace detail {

ActiveSpan::ActiveSpan(const TracingConfig& config, Call& call) : config_(&config) {
  // One clock read at each end: in a VM a clock read is a large part of what a span costs.
  span_.start_time = std::chrono::system_clock::now();

  // First the parent.
  std::optional<TraceContext> parsed;
  const TraceContext* parent = nullptr;
  bool inject = false;
  ServerTraceSlot* slot = nullptr;
  if (call.is_server()) {
    span_.kind = SpanKind::kServer;
    slot = call.extensions().get<ServerTraceSlot>();
    if (slot != nullptr && slot->context != nullptr) {
      parent = slot->context;  // an outer tracing layer's span on this server
    } else if ((parsed = read_incoming(*call.server_context()))) {
      parent = &*parsed;
    }
  } else {
    span_.kind = SpanKind::kClient;
    const CallOptions& options = *call.options();
    if (options.metadata().contains(kTraceparentKey)) {
      // The caller (or this layer, on an earlier attempt) already chose what the server sees.
      if ((parsed = read_incoming(options.metadata()))) parent = &*parsed;
    } else {
      inject = true;
      if (const ServerContext* server = options.parent()) {
        if (const TraceContext* current = current_trace(*server)) {
          parent = current;
        } else if ((parsed = read_incoming(*server))) {
          parent = &*parsed;  // the parent server has no tracing layer: continue its caller's trace
        }
      }
    }
  }

  // Then this span's own context.
  TraceContext& self = span_.context;
  if (parent != nullptr) {
    self.trace_id = parent->trace_id;
    self.flags = parent->flags;
    self.tracestate = parent->tracestate;
    span_.parent_span_id = parent->span_id;
  } else {
    self.trace_id = TraceId::random();
    self.flags = TraceContext::kSampled;
  }
  self.span_id = SpanId::random();

  // Last, publish it.
  if (call.is_server()) {
    if (slot != nullptr) {
      previous_ = slot->context;
      slot->context = &self;
    } else {
      call.extensions().insert(ServerTraceSlot{&self});
    }
  } else if (inject) {
    CallOptions& options = *call.options();
    options.add_metadata(std::string(kTraceparentKey), format_traceparent(self));
    if (!self.tracestate.empty()) {
      options.add_metadata(std::string(kTracestateKey), self.tracestate);
    }
  }
}

void ActiveSpan::finish(Call& call, const Status& status) {
  end(call, status.code(), status.message());
}

void ActiveSpan::finish(Call& call, const std::exception_ptr& error) {
  std::string what = "unknown exception";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  // What the framework answers for a handler that threw.
  bool cancelled = call.is_server() && call.server_context()->is_cancelled();
  end(call, cancelled ? StatusCode::kCancelled : StatusCode::kInternal,
      absl::StrCat("exception: ", what));
}

void ActiveSpan::end(Call& call, StatusCode code, std::string_view message) {
  if (call.is_server()) {
    // The context lives in this frame: unpublish it before the frame goes.
    if (auto* slot = call.extensions().get<ServerTraceSlot>()) slot->context = previous_;
  }
  if (config_->exporter == nullptr) return;
  if (!span_.context.sampled() && !config_->options.export_unsampled) return;
  // The exported span is filled in a span kept per thread, whose strings keep their capacity
  // from call to call (exporters copy what they keep), unless an exporter ends a span while
  // exporting one.
  thread_local Span scratch;
  thread_local bool scratch_busy = false;
  Span& out = scratch_busy ? span_ : scratch;
  if (&out == &scratch) {
    scratch_busy = true;
    out.kind = span_.kind;
    out.context.trace_id = span_.context.trace_id;
    out.context.span_id = span_.context.span_id;
    out.context.flags = span_.context.flags;
    out.context.tracestate.assign(span_.context.tracestate);
    out.parent_span_id = span_.parent_span_id;
    out.start_time = span_.start_time;
  }
  // The wall clock may step back; a span never ends before it starts.
  out.end_time = std::max(span_.start_time, std::chrono::system_clock::now());
  out.status_code = code;
  out.status_message.assign(message);
  std::string_view path = call.method().path;
  if (path.starts_with('/')) path.remove_prefix(1);
  out.name.assign(path);
  out.peer = call.peer();
  out.service_name.assign(config_->options.service_name);
  try {
    config_->exporter->export_span(out);
  } catch (...) {
    // An exporter's failure must not change the call's outcome.
  }
  if (&out == &scratch) scratch_busy = false;
}

}  // namespace detail

TracingLayer::TracingLayer(std::shared_ptr<SpanExporter> exporter, TracingOptions options) {
  if (options.service_name.empty()) {
    options.service_name = absl::StrCat("unknown_service:", program_invocation_short_name);
  }
  config_ = std::make_shared<const detail::TracingConfig>(
      detail::TracingConfig{std::move(exporter), std::move(options)});
}

HookDecision TracingLayer::before(Call& call, State& state) const {
  state.span.emplace(*config_, call);
  return HookDecision::proceed();
}

void TracingLayer::after(Call& call, State& state, CallOutcome& outcome) const {
  if (outcome.error) {
    state.span->finish(call, outcome.error);
  } else {
    state.span->finish(call, outcome.status);
  }
}

}  // namespace trellis
