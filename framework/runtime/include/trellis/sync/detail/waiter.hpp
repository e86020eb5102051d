// Internal: the waiter machinery shared by the trellis::sync primitives.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>
#include <memory>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <utility>

#include "trellis/detail/completion_handler.hpp"
#include "trellis/detail/runnable.hpp"
#include "trellis/executor.hpp"
#include "trellis/sync/error.hpp"

namespace trellis::sync::detail {

class WaitList;
class WaitState;
class ReadyList;

// How every primitive waits. A pending operation is a Waiter: an intrusive node, linked into one
// of its primitive's WaitLists under the primitive's mutex (WaitState::mu). Exactly one party
// claims it, under that mutex, by unlinking it: a wake-up (which first stores the outcome in
// it), the cancellation handler (outcome: operation_aborted), or a close (outcome: Errc::closed).
// The claimer then calls complete() with no lock held, which posts the completion to the
// handler's associated executor; there the handler is taken (clearing its cancellation slot), the
// waiter freed and the handler invoked. A handler never runs under a primitive's mutex, inside a
// cancellation signal's emit(), or inline in the initiating function.
class Waiter : public trellis::detail::Runnable {
 public:
  // Guarded by the primitive's mutex.
  Waiter* prev_waiter = nullptr;
  Waiter* next_waiter = nullptr;
  WaitList* list = nullptr;  // the list it is linked into; nullptr once claimed
  boost::system::error_code ec;

  // Posts the completion to the handler's executor. Once, by the claimer, with no lock held.
  virtual void complete() = 0;
  // Called under the primitive's mutex when the cancellation of a waiter arrives after a wake-up
  // claimed it with success but before its handler ran: gives what the wake-up handed over (a
  // value, the lock, permits) back to the primitive, so that a cancelled operation takes
  // nothing. Returns whether it did; the waiter then completes with operation_aborted. The
  // default keeps the outcome.
  virtual bool revoke(WaitState& /*state*/, ReadyList& /*ready*/) { return false; }

 protected:
  ~Waiter() = default;
};

// An intrusive FIFO of waiters. Not thread-safe: guarded by the owning primitive's mutex.
class WaitList {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  Waiter* front() const noexcept { return head_; }
  void push_back(Waiter* w) noexcept;
  void remove(Waiter* w) noexcept;
  // Unlinks and returns the first waiter (nullptr when empty).
  Waiter* pop_front() noexcept;

 private:
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
};

// Waiters claimed under a lock, completed once the lock is released. Declare it before the lock
// guard so that its destructor (which completes them) runs after the guard's.
class ReadyList {
 public:
  ReadyList() = default;
  ReadyList(const ReadyList&) = delete;
  ReadyList& operator=(const ReadyList&) = delete;
  ~ReadyList() { flush(); }
  // `w` must be claimed (unlinked) already.
  void add(Waiter* w) noexcept {
    w->next_waiter = nullptr;
    if (tail_ == nullptr) {
      head_ = w;
    } else {
      tail_->next_waiter = w;
    }
    tail_ = w;
  }
  // Claims every waiter of `list` with error `ec`.
  void claim_all(WaitList& list, boost::system::error_code ec) noexcept;
  void flush();

 private:
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
};

// The part of a primitive's shared state that the cancellation of a waiter needs.
class WaitState {
 public:
  WaitState() = default;
  WaitState(const WaitState&) = delete;
  WaitState& operator=(const WaitState&) = delete;
  virtual ~WaitState() = default;

  std::mutex mu;

 protected:
  // Called under `mu` after a waiter was removed by cancellation: a primitive whose waiters block
  // the ones behind them (a semaphore's large request) wakes those here.
  virtual void after_cancel(ReadyList&) {}

  friend void cancel_waiter(WaitState& state, Waiter* w);
};

// The cancellation of `w`: claims it with operation_aborted unless a wake-up already did.
void cancel_waiter(WaitState& state, Waiter* w);

// The Trellis worker behind `ex`, when it is a trellis::Executor (directly or in an
// any_io_executor): the waiter is then queued there as it is, without another allocation.
template <class Ex>
trellis::detail::Worker* trellis_worker(const Ex& ex) noexcept {
  if constexpr (std::is_same_v<Ex, trellis::Executor>) {
    return ex.worker();
  } else if constexpr (std::is_same_v<Ex, boost::asio::any_io_executor>) {
    const auto* te = ex.template target<trellis::Executor>();
    return te != nullptr ? te->worker() : nullptr;
  } else {
    return nullptr;
  }
}

// A pending operation of Base (a Waiter that holds the operation's outcome and provides
// `take_results()`, a tuple of the completion's arguments) for the handler type Handler.
template <class Base, class Handler>
class WaitOp final : public Base {
 public:
  template <class... A>
  WaitOp(Handler h, std::shared_ptr<WaitState> state, A&&... a)
      : Base(std::forward<A>(a)...), handler_(std::move(h)), state_(std::move(state)) {}

  // Installs the cancellation handler. On the handler's executor, before the op is linked.
  void install_cancellation() {
    auto slot = boost::asio::get_associated_cancellation_slot(handler_);
    if (slot.is_connected()) slot.template emplace<Cancel>(this);
  }

  void complete() override {
    auto ex = boost::asio::get_associated_executor(handler_);
    if (trellis::detail::Worker* w = trellis_worker(ex); w != nullptr) {
      trellis::detail::post(w, this);
    } else {
      boost::asio::post(ex, Posted(this));
    }
  }

  void run() override {
    Handler h = trellis::detail::take_handler(handler_);
    auto results = this->take_results();
    delete this;
    std::apply([&h](auto&&... a) { std::move(h)(std::move(a)...); }, std::move(results));
  }

  // Frees the op unrun (its executor is shutting down). An outcome holding a resource (a lock
  // guard, a permit) releases it as it is destroyed.
  void discard() override {
    trellis::detail::take_handler(handler_);
    delete this;
  }

 private:
  ~WaitOp() = default;

  struct Cancel {
    explicit Cancel(WaitOp* op) : op(op) {}
    void operator()(boost::asio::cancellation_type type) {
      if (type == boost::asio::cancellation_type::none) return;
      WaitOp* self = op;  // `this` may be destroyed by what follows
      cancel_waiter(*self->state_, self);
    }
    WaitOp* op;
  };

  // The completion posted to an executor that is not a Trellis worker's.
  class Posted {
   public:
    explicit Posted(WaitOp* op) : op_(op) {}
    Posted(Posted&& other) noexcept : op_(std::exchange(other.op_, nullptr)) {}
    Posted& operator=(Posted&&) = delete;
    ~Posted() {
      if (op_ != nullptr) op_->discard();
    }
    void operator()() { std::exchange(op_, nullptr)->run(); }

   private:
    WaitOp* op_;
  };

  Handler handler_;
  std::shared_ptr<WaitState> state_;
};

// Starts a wait for `handler`: allocates the op (Base constructed from `a...`), installs its
// cancellation handler, then under the state's mutex calls `try_now(base, ready)`. try_now either
// stores the outcome in `base` and returns nullptr (the op completes once the lock is released),
// or returns the list to link the op into, to wait. `ready` collects other waiters that try_now
// claims (a sender it unblocks), completed after the lock is released.
template <class Base, class Handler, class TryNow, class... A>
void start_wait(Handler handler, std::shared_ptr<WaitState> state, TryNow&& try_now, A&&... a) {
  WaitState& s = *state;
  auto* op = new WaitOp<Base, Handler>(std::move(handler), std::move(state), std::forward<A>(a)...);
  op->install_cancellation();
  ReadyList ready;
  {
    std::lock_guard lock(s.mu);
    if (WaitList* list = try_now(*static_cast<Base*>(op), ready); list != nullptr) {
      list->push_back(op);
      return;
    }
  }
  op->complete();
}

}  // namespace trellis::sync::detail
