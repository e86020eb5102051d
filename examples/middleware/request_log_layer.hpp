// A complete custom layer, the one docs/middleware.md walks through: logs one line per call with
// its method, side, status and duration. Works on the server and the client, for every kind of
// call, because it only reads what every Call has.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

#include "trellis/layer.hpp"

class RequestLogLayer {
 public:
  explicit RequestLogLayer(std::string prefix) : prefix_(std::move(prefix)) {}

  // The service a layer returns. It is shared by every call on every worker thread, so
  // operator() is const and keeps per-call state in the coroutine frame.
  template <trellis::CallService Inner>
  class Service {
   public:
    Service(std::string prefix, Inner inner)
        : prefix_(std::move(prefix)), inner_(std::move(inner)) {}

    trellis::Task<trellis::Status> operator()(trellis::Call& call) const {
      auto start = std::chrono::steady_clock::now();
      trellis::Status status = co_await inner_(call);  // the rest of the stack, then the handler
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::steady_clock::now() - start)
                    .count();
      std::fprintf(stderr, "%s %s %s -> %s in %lld us\n", prefix_.c_str(),
                   call.is_server() ? "served" : "called", std::string(call.method().path).c_str(),
                   trellis::status_code_name(status.code()).c_str(), static_cast<long long>(us));
      co_return status;
    }

   private:
    std::string prefix_;
    Inner inner_;
  };

  // Layer::wrap: called once per method when the server or channel is built.
  template <trellis::CallService Inner>
  Service<Inner> wrap(Inner inner) const {
    return Service<Inner>(prefix_, std::move(inner));
  }

 private:
  std::string prefix_;
};

static_assert(trellis::Layer<RequestLogLayer>);
