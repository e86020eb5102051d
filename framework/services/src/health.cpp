// trellis::HealthService: grpc.health.v1.Health on the stubs protoc-gen-trellis generates from
// Debian's grpc-proto.
#include "trellis/health.hpp"

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "grpc/health/v1/health.trellis.h"
#include "trellis/detail/completion_handler.hpp"

namespace trellis {

std::string_view serving_status_name(ServingStatus status) {
  switch (status) {
    case ServingStatus::kUnknown:
      return "UNKNOWN";
    case ServingStatus::kServing:
      return "SERVING";
    case ServingStatus::kNotServing:
      return "NOT_SERVING";
  }
  return "UNKNOWN";
}

namespace detail {

using WireResponse = ::grpc::health::v1::HealthCheckResponse;
using WireStatus = ::grpc::health::v1::HealthCheckResponse::ServingStatus;

namespace {

WireStatus to_wire(std::optional<ServingStatus> status) {
  if (!status) return WireResponse::SERVICE_UNKNOWN;
  switch (*status) {
    case ServingStatus::kUnknown:
      return WireResponse::UNKNOWN;
    case ServingStatus::kServing:
      return WireResponse::SERVING;
    case ServingStatus::kNotServing:
      return WireResponse::NOT_SERVING;
  }
  return WireResponse::UNKNOWN;
}

}  // namespace

// One Watch call, registered with the state for as long as its handler runs. Lives in the
// handler's coroutine frame; its fields are guarded by HealthState's mutex.
class HealthWatcher {
 public:
  // A pending wait for a change: completes (posted to its handler's executor) once.
  class Waiter {
   public:
    virtual void finish(boost::system::error_code ec) = 0;

   protected:
    ~Waiter() = default;
  };

  HealthWatcher(std::shared_ptr<HealthState> state, std::string service);
  ~HealthWatcher();
  HealthWatcher(const HealthWatcher&) = delete;
  HealthWatcher& operator=(const HealthWatcher&) = delete;

  // What to send next: the current status (nullopt: none), and whether the server is shutting
  // down (the watch then ends once it is sent). Clears the change mark.
  struct Snapshot {
    std::optional<ServingStatus> status;
    bool ending = false;
  };
  Snapshot take();

  // Completes when the status changed (or the server began to shut down) since the last take(),
  // at once if it already has; with operation_aborted when the handler's cancellation slot is
  // signalled. The completion always runs on the handler's executor, posted.
  template <class Token>
  auto changed(Token&& token);

 private:
  friend class HealthState;
  template <class Handler>
  class WaitOp;

  // Starts waiting with `w`, or finishes it at once when a change is already marked.
  void arm(Waiter* w);
  // Takes `w` back if it is still pending; false once a change has finished it.
  bool disarm(Waiter* w);

  std::shared_ptr<HealthState> state_;
  std::string service_;
  bool changed_ = false;
  Waiter* waiter_ = nullptr;
  std::multimap<std::string, HealthWatcher*, std::less<>>::iterator entry_;
};

// What a HealthService and its reporters share: the statuses and the registered watchers.
class HealthState {
 public:
  HealthState() { statuses_.emplace("", ServingStatus::kServing); }

  void set(std::string_view service, ServingStatus status) {
    Woken woken;
    {
      std::lock_guard lock(mu_);
      if (shut_down_) return;
      auto it = statuses_.find(service);
      if (it == statuses_.end()) {
        statuses_.emplace(std::string(service), status);
      } else if (it->second == status) {
        return;
      } else {
        it->second = status;
      }
      auto [first, last] = watchers_.equal_range(service);
      for (auto w = first; w != last; ++w) wake(*w->second, woken);
    }
    finish(woken);
  }

  std::optional<ServingStatus> get(std::string_view service) {
    std::lock_guard lock(mu_);
    auto it = statuses_.find(service);
    if (it == statuses_.end()) return std::nullopt;
    return it->second;
  }

  // Every status NOT_SERVING for good, and every watcher told.
  void shut_down() {
    Woken woken;
    {
      std::lock_guard lock(mu_);
      shut_down_ = true;
      for (auto& [name, status] : statuses_) status = ServingStatus::kNotServing;
      for (auto& [name, watcher] : watchers_) wake(*watcher, woken);
    }
    finish(woken);
  }

 private:
  friend class HealthWatcher;
  using Woken = std::vector<HealthWatcher::Waiter*>;

  // Marks a change for `w` and takes its pending wait, if any, into `woken`. Under mu_.
  static void wake(HealthWatcher& w, Woken& woken) {
    w.changed_ = true;
    if (w.waiter_ != nullptr) woken.push_back(std::exchange(w.waiter_, nullptr));
  }
  // Finishes the waits wake() took, outside mu_: a post to a worker that has stopped destroys
  // the completion, and with it the watcher's frame, at once (a bug elsewhere, but no deadlock).
  static void finish(const Woken& woken) {
    for (HealthWatcher::Waiter* w : woken) w->finish({});
  }

  std::mutex mu_;
  std::map<std::string, ServingStatus, std::less<>> statuses_;
  std::multimap<std::string, HealthWatcher*, std::less<>> watchers_;
  bool shut_down_ = false;
};

template <class Handler>
class HealthWatcher::WaitOp final : public HealthWatcher::Waiter {
 public:
  WaitOp(HealthWatcher* watcher, Handler h) : handler(std::move(h)), watcher_(watcher) {}

  void start() {
    auto slot = boost::asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) slot.template emplace<Cancel>(this);
    watcher_->arm(this);
  }

  // Posted even when called on the handler's own worker: the caller may be a cancellation
  // handler inside the signal's emit(), or set_status on a task of that worker.
  void finish(boost::system::error_code ec) override {
    auto ex = boost::asio::get_associated_executor(handler);
    boost::asio::post(ex, DeferredCompletion<WaitOp, boost::system::error_code>(this, ec));
  }

  Handler handler;  // for DeferredCompletion

 private:
  // Runs on the handler's executor, where the slot is signalled.
  struct Cancel {
    explicit Cancel(WaitOp* op) : op(op) {}
    void operator()(boost::asio::cancellation_type type) {
      if (type == boost::asio::cancellation_type::none) return;
      if (op->watcher_->disarm(op)) op->finish(boost::asio::error::operation_aborted);
    }
    WaitOp* op;
  };

  HealthWatcher* watcher_;
};

HealthWatcher::HealthWatcher(std::shared_ptr<HealthState> state, std::string service)
    : state_(std::move(state)), service_(std::move(service)) {
  std::lock_guard lock(state_->mu_);
  entry_ = state_->watchers_.emplace(service_, this);
}

HealthWatcher::~HealthWatcher() {
  std::lock_guard lock(state_->mu_);
  state_->watchers_.erase(entry_);
}

HealthWatcher::Snapshot HealthWatcher::take() {
  std::lock_guard lock(state_->mu_);
  changed_ = false;
  Snapshot s;
  if (auto it = state_->statuses_.find(service_); it != state_->statuses_.end()) {
    s.status = it->second;
  }
  s.ending = state_->shut_down_;
  return s;
}

template <class Token>
auto HealthWatcher::changed(Token&& token) {
  return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
      [this](auto handler) {
        using H = decltype(handler);
        (new WaitOp<H>(this, std::move(handler)))->start();
      },
      token);
}

void HealthWatcher::arm(Waiter* w) {
  {
    std::lock_guard lock(state_->mu_);
    if (!changed_) {
      waiter_ = w;
      return;
    }
  }
  w->finish({});
}

bool HealthWatcher::disarm(Waiter* w) {
  std::lock_guard lock(state_->mu_);
  if (waiter_ != w) return false;
  waiter_ = nullptr;
  return true;
}

// The generated service's handlers on the shared state.
class HealthServiceImpl final : public ::grpc::health::v1::HealthService {
 public:
  explicit HealthServiceImpl(std::shared_ptr<HealthState> state) : state_(std::move(state)) {}

  Task<Result<WireResponse>> Check(ServerContext&,
                                   const ::grpc::health::v1::HealthCheckRequest& request) override {
    std::optional<ServingStatus> status = state_->get(request.service());
    if (!status) co_return Status::not_found("unknown service: " + request.service());
    WireResponse response;
    response.set_status(to_wire(status));
    co_return response;
  }

  // Sends the status whenever it differs from what was sent last; a change during a write is
  // seen by the take() after it, so none is lost (though intermediate ones may be skipped).
  Task<Status> Watch(ServerContext&, const ::grpc::health::v1::HealthCheckRequest& request,
                     ServerWriter<WireResponse>& writer) override {
    HealthWatcher watcher(state_, request.service());
    std::optional<WireStatus> sent;
    for (;;) {
      HealthWatcher::Snapshot now = watcher.take();
      WireStatus status = to_wire(now.status);
      if (status != sent) {
        WireResponse response;
        response.set_status(status);
        if (!co_await writer.write(response)) co_return Status::cancelled("the watcher went away");
        sent = status;
      }
      if (now.ending) co_return Status();
      co_await watcher.changed(use_task);
    }
  }

 protected:
  void on_server_shutdown() override { state_->shut_down(); }

 private:
  std::shared_ptr<HealthState> state_;
};

}  // namespace detail

HealthReporter::HealthReporter(std::shared_ptr<detail::HealthState> state)
    : state_(std::move(state)) {}

void HealthReporter::set_status(std::string_view service, ServingStatus status) const {
  state_->set(service, status);
}

std::optional<ServingStatus> HealthReporter::status(std::string_view service) const {
  return state_->get(service);
}

HealthService::HealthService()
    : state_(std::make_shared<detail::HealthState>()),
      impl_(std::make_unique<detail::HealthServiceImpl>(state_)) {}

HealthService::~HealthService() = default;

Service& HealthService::service() { return *impl_; }

HealthReporter HealthService::reporter() const { return HealthReporter(state_); }

}  // namespace trellis
