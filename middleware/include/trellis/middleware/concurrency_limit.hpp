// trellis::ConcurrencyLimitLayer: at most N calls at once inside the wrapped service.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "trellis/detail/completion_handler.hpp"
#include "trellis/hook_layer.hpp"

namespace trellis {

// A counting semaphore of call permits with a FIFO of asynchronous waiters, shared by every call
// (on every worker) that goes through the layers built on it.
//
// The uncontended path is lock-free: try_acquire() and release() are one atomic read-modify-write
// each, plus a read of the waiter count. Only when permits run out does a call take the small
// mutex that guards the waiter list; no lock is ever held while a coroutine is suspended, and a
// waiter is resumed on its own executor (never inline on the thread that released the permit).
//
// Waiters are served in arrival order. A caller that finds waiters queued does not jump the
// queue on the fast path, but a permit released while a waiter is being registered may still go
// to a newcomer: the order is FIFO among waiters, not a strict global ticket order.
class ConcurrencyLimiter {
 public:
  // `max_in_flight` permits (>= 1 for the limiter to let anything through). At most
  // `max_waiting` waiters queue; async_acquire fails at once when that many already wait.
  explicit ConcurrencyLimiter(std::size_t max_in_flight,
                              std::size_t max_waiting = std::numeric_limits<std::size_t>::max());
  // Waiters still queued (a bug in the owner: the services built on a limiter must outlive their
  // calls) complete with operation_aborted.
  ~ConcurrencyLimiter();
  ConcurrencyLimiter(const ConcurrencyLimiter&) = delete;
  ConcurrencyLimiter& operator=(const ConcurrencyLimiter&) = delete;

  // Takes a permit if one is free and nobody is waiting for one; never blocks. Pair every true
  // with one release().
  bool try_acquire() noexcept {
    if (waiting_.load(std::memory_order_relaxed) != 0) return false;
    return take_permit();
  }
  // Gives a permit back, waking the first waiter if there is one. Callable from any thread.
  void release() noexcept;

  // Waits for a permit. Completes with:
  //  - no error: the caller holds a permit (release() it);
  //  - boost::asio::error::operation_aborted: the handler's cancellation slot was signalled
  //    (any type) before a permit came; the waiter is removed from the queue, no permit is held;
  //  - boost::asio::error::no_buffer_space: max_waiting waiters are already queued.
  // The completion runs on the handler's associated executor, never inside this call. Cancelling
  // after a permit was granted does not take it back: the operation then succeeds.
  template <class Token>
  auto async_acquire(Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
        [this](auto handler) {
          using H = decltype(handler);
          (new WaitOp<H>(this, std::move(handler)))->start();
        },
        token);
  }

  std::size_t max_in_flight() const { return max_in_flight_; }
  // Permits held right now (a snapshot, for tests and gauges).
  std::size_t in_flight() const {
    auto free = available_.load(std::memory_order_acquire);
    return free >= static_cast<std::int64_t>(max_in_flight_)
               ? 0
               : max_in_flight_ - static_cast<std::size_t>(free);
  }
  // Callers queued in async_acquire right now (a snapshot).
  std::size_t waiting() const { return waiting_.load(std::memory_order_acquire); }

 private:
  // A queued async_acquire. The list links and `queued` are guarded by mu_.
  struct Waiter {
    Waiter* prev = nullptr;
    Waiter* next = nullptr;
    bool queued = false;
    // Posts the completion with `ec` to the waiter's executor; the waiter frees itself there.
    virtual void finish(boost::system::error_code ec) = 0;

   protected:
    ~Waiter() = default;
  };

  template <class Handler>
  class WaitOp final : public Waiter {
   public:
    WaitOp(ConcurrencyLimiter* limiter, Handler handler)
        : limiter_(limiter),
          handler_(std::move(handler)),
          executor_(boost::asio::get_associated_executor(handler_, calling_executor())) {}

    void start() {
      auto slot = boost::asio::get_associated_cancellation_slot(handler_);
      if (slot.is_connected()) slot.template emplace<Cancel>(Cancel{this});
      limiter_->enqueue(this);
    }

    void finish(boost::system::error_code ec) override {
      // Always posted: the releasing thread may be another worker, and a cancellation handler
      // must not resume the coroutine from inside the signal's emit().
      boost::asio::post(executor_, [this, ec] {
        Handler h = detail::take_handler(handler_);
        delete this;
        std::move(h)(ec);
      });
    }

   private:
    struct Cancel {
      WaitOp* op;
      void operator()(boost::asio::cancellation_type type) {
        if (type == boost::asio::cancellation_type::none) return;
        if (op->limiter_->remove(op)) op->finish(boost::asio::error::operation_aborted);
      }
    };

    ConcurrencyLimiter* limiter_;
    Handler handler_;
    boost::asio::any_io_executor executor_;
  };

  // The executor of the calling runtime worker (what a handler without an executor of its own,
  // such as a parallel group's, completes on), else the system executor.
  static boost::asio::any_io_executor calling_executor();

  bool take_permit() noexcept {
    auto free = available_.load(std::memory_order_relaxed);
    while (free > 0) {
      if (available_.compare_exchange_weak(free, free - 1, std::memory_order_acquire,
                                           std::memory_order_relaxed)) {
        return true;
      }
    }
    return false;
  }
  // Grants `w` a permit at once, queues it, or fails it when the queue is full.
  void enqueue(Waiter* w);
  // Unlinks `w` if it is still queued; false once it was granted.
  bool remove(Waiter* w);

  const std::size_t max_in_flight_;
  const std::size_t max_waiting_;
  std::atomic<std::int64_t> available_;
  std::atomic<std::size_t> waiting_{0};
  std::mutex mu_;
  Waiter* head_ = nullptr;  // guarded by mu_
  Waiter* tail_ = nullptr;  // guarded by mu_
};

namespace detail {

// The slow path of ConcurrencyLimitLayer: waits for a permit of `limiter` within the call's
// deadline. OK: a permit is held. Otherwise the status the call ends with.
Task<Status> wait_for_permit(ConcurrencyLimiter& limiter, const Call& call);

// The permit a call holds, if any: given back by release() or, whatever the path, when the
// call's frame goes.
class HeldPermit {
 public:
  HeldPermit() = default;
  HeldPermit(const HeldPermit&) = delete;
  HeldPermit& operator=(const HeldPermit&) = delete;
  ~HeldPermit() { release(); }

  void hold(ConcurrencyLimiter* limiter) { limiter_ = limiter; }
  void release() {
    if (limiter_ != nullptr) std::exchange(limiter_, nullptr)->release();
  }

 private:
  ConcurrencyLimiter* limiter_ = nullptr;
};

}  // namespace detail

// At most `max` calls at once inside the wrapped service (tower's ConcurrencyLimit). A call
// beyond the limit waits, without holding a worker, for a permit, in arrival order:
//
//  - it proceeds as soon as a call inside returns (its permit is handed over);
//  - it ends DEADLINE_EXCEEDED when the call's deadline passes first (server: the incoming or
//    layer-tightened deadline; client: the call's effective deadline), without reaching the
//    inner service; a call without a deadline may wait indefinitely;
//  - it ends CANCELLED when its task is cancelled (server: the client went away; client: the
//    caller's task was aborted or lost an `||` race); the waiter leaves the queue either way;
//  - with max_waiting(n), it ends RESOURCE_EXHAUSTED at once when n calls already wait.
//
// For no waiting at all, use LoadShedLayer. The permit is held until the inner service's task
// ends, by any path (an exception included): for a server-streaming call that is the whole
// stream; on the client, the whole call including retries when this layer is outside a retry
// layer.
//
// Copies of a layer, and every service it wraps, share one ConcurrencyLimiter: a layer given to
// Server::Builder::layer limits the whole server, one given to Channel::with_layer limits all
// calls through that channel handle (and handles derived from it). Build separate layers for
// separate limits, or share one limiter with a LoadShedLayer through limiter().
class ConcurrencyLimitLayer : public HookLayerBase<ConcurrencyLimitLayer> {
 public:
  explicit ConcurrencyLimitLayer(std::size_t max)
      : limiter_(std::make_shared<ConcurrencyLimiter>(max)) {}
  explicit ConcurrencyLimitLayer(std::shared_ptr<ConcurrencyLimiter> limiter)
      : limiter_(std::move(limiter)) {}
  // A new limiter of `max` permits in which at most `max_waiting` calls may wait.
  static ConcurrencyLimitLayer with_max_waiting(std::size_t max, std::size_t max_waiting) {
    return ConcurrencyLimitLayer(std::make_shared<ConcurrencyLimiter>(max, max_waiting));
  }

  // The shared limiter: in_flight() and waiting() for tests and gauges.
  const std::shared_ptr<ConcurrencyLimiter>& limiter() const { return limiter_; }

  // A hook layer (hook_layer.hpp): no coroutine frame of its own, and one only for a call that
  // has to wait.
  using State = detail::HeldPermit;
  HookDecision before(Call&, State& permit) const {
    if (!limiter_->try_acquire()) return HookDecision::wait();
    permit.hold(limiter_.get());
    return HookDecision::proceed();
  }
  Task<std::optional<Status>> wait(Call& call, State& permit) const;
  void after(Call&, State& permit, CallOutcome&) const { permit.release(); }

 private:
  std::shared_ptr<ConcurrencyLimiter> limiter_;
};

static_assert(HookLayer<ConcurrencyLimitLayer>);

}  // namespace trellis
