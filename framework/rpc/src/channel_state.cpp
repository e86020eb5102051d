// Channel::state, wait_for_state_change and wait_until_ready: gRPC's connectivity watch
// (grpc::Channel::NotifyOnStateChange) as a Trellis task.
#include <grpc/grpc.h>
#include <grpcpp/channel.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <memory>
#include <utility>

#include "trellis/channel.hpp"
#include "trellis/detail/completion_handler.hpp"
#include "trellis/executor.hpp"
#include "worker.hpp"

namespace trellis {
namespace {

using SystemTime = std::chrono::system_clock::time_point;

// gRPC cannot take a connectivity watch back: a pending one holds its completion queue (and a
// runtime's shutdown) until it fires. Watches are therefore renewed every kWatchSlice, and a
// cancellation or a stopping worker is honoured between two.
constexpr std::chrono::milliseconds kWatchSlice(500);

grpc_connectivity_state to_grpc(ConnectivityState s) {
  switch (s) {
    case ConnectivityState::kIdle:
      return GRPC_CHANNEL_IDLE;
    case ConnectivityState::kConnecting:
      return GRPC_CHANNEL_CONNECTING;
    case ConnectivityState::kReady:
      return GRPC_CHANNEL_READY;
    case ConnectivityState::kTransientFailure:
      return GRPC_CHANNEL_TRANSIENT_FAILURE;
    case ConnectivityState::kShutdown:
      return GRPC_CHANNEL_SHUTDOWN;
  }
  return GRPC_CHANNEL_IDLE;
}

ConnectivityState from_grpc(grpc_connectivity_state s) {
  switch (s) {
    case GRPC_CHANNEL_IDLE:
      return ConnectivityState::kIdle;
    case GRPC_CHANNEL_CONNECTING:
      return ConnectivityState::kConnecting;
    case GRPC_CHANNEL_READY:
      return ConnectivityState::kReady;
    case GRPC_CHANNEL_TRANSIENT_FAILURE:
      return ConnectivityState::kTransientFailure;
    case GRPC_CHANNEL_SHUTDOWN:
      return ConnectivityState::kShutdown;
  }
  return ConnectivityState::kShutdown;
}

// One wait_for_state_change: a watch on its worker's completion queue, renewed every slice until
// the state changes, the deadline passes, the awaiting task is cancelled or the worker stops.
// Lives until its handler is invoked (or dropped by a stopping executor): complete_op frees it.
template <class Handler>
class WatchOp final : public detail::Completion {
 public:
  WatchOp(Handler h, detail::Worker* w, std::shared_ptr<grpc::Channel> channel,
          grpc_connectivity_state last, SystemTime deadline)
      : handler(std::move(h)),
        worker_(w),
        channel_(std::move(channel)),
        last_(last),
        deadline_(deadline) {
    auto slot = boost::asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) slot.template emplace<Cancel>(this);
  }

  // On the worker's thread.
  void start() {
    if (!worker_->accepting_ops()) return finish({}, false);
    if (channel_->GetState(false) != last_) return finish({}, true);
    arm();
  }

  Handler handler;                     // for complete_op
  std::atomic<bool> completed{false};  // for complete_op

 private:
  // Runs on the handler's executor while the operation is pending (complete_op clears the slot
  // there before it frees the operation): only marks the request, which the next renewal reads.
  struct Cancel {
    explicit Cancel(WatchOp* op) : op(op) {}
    void operator()(boost::asio::cancellation_type type) {
      if (type != boost::asio::cancellation_type::none) {
        op->cancel_requested_.store(true, std::memory_order_release);
      }
    }
    WatchOp* op;
  };

  void arm() {
    SystemTime slice_end = std::min(deadline_, std::chrono::system_clock::now() + kWatchSlice);
    channel_->NotifyOnStateChange(last_, slice_end, worker_->cq(), this);
  }

  // The watch fired: `ok` when the state changed, false when its slice ended.
  void complete(bool ok) override {
    if (ok) return finish({}, true);
    if (cancel_requested_.load(std::memory_order_acquire)) {
      return finish(boost::asio::error::operation_aborted, false);
    }
    if (std::chrono::system_clock::now() >= deadline_ || !worker_->accepting_ops()) {
      return finish({}, false);
    }
    arm();
  }

  void finish(boost::system::error_code ec, bool changed) {
    detail::complete_op(this, worker_, ec, changed);
  }

  detail::Worker* worker_;
  std::shared_ptr<grpc::Channel> channel_;
  grpc_connectivity_state last_;
  SystemTime deadline_;
  std::atomic<bool> cancel_requested_{false};
};

}  // namespace

std::string_view connectivity_state_name(ConnectivityState state) {
  switch (state) {
    case ConnectivityState::kIdle:
      return "IDLE";
    case ConnectivityState::kConnecting:
      return "CONNECTING";
    case ConnectivityState::kReady:
      return "READY";
    case ConnectivityState::kTransientFailure:
      return "TRANSIENT_FAILURE";
    case ConnectivityState::kShutdown:
      return "SHUTDOWN";
  }
  return "SHUTDOWN";
}

ConnectivityState Channel::state(bool try_to_connect) const {
  return from_grpc(channel_->GetState(try_to_connect));
}

Task<bool> Channel::wait_for_state_change(ConnectivityState last_observed,
                                          SystemTime deadline) const {
  if (last_observed == ConnectivityState::kShutdown) co_return false;  // it never changes again
  co_return co_await boost::asio::async_initiate<decltype(use_task),
                                                 void(boost::system::error_code, bool)>(
      [](auto handler, std::shared_ptr<grpc::Channel> channel, grpc_connectivity_state last,
         SystemTime deadline) {
        detail::Worker* w = detail::worker_for(boost::asio::get_associated_executor(handler));
        if (w == nullptr) {  // awaited off a Trellis runtime: there is no completion queue
          auto ex = boost::asio::get_associated_executor(handler);
          boost::asio::post(ex, [h = std::move(handler)]() mutable {
            std::move(h)(boost::asio::error::operation_not_supported, false);
          });
          return;
        }
        auto* op = new WatchOp<decltype(handler)>(std::move(handler), w, std::move(channel), last,
                                                  deadline);
        if (detail::running_in(w)) {
          op->start();
        } else {
          detail::post(w, detail::make_runnable([op] { op->start(); }));
        }
      },
      use_task, channel_, to_grpc(last_observed), deadline);
}

Task<bool> Channel::wait_until_ready(SystemTime deadline) const {
  for (;;) {
    ConnectivityState now = state(/*try_to_connect=*/true);
    if (now == ConnectivityState::kReady) co_return true;
    if (now == ConnectivityState::kShutdown) co_return false;
    if (!co_await wait_for_state_change(now, deadline)) co_return false;
  }
}

}  // namespace trellis
