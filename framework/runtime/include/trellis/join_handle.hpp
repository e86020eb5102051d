// trellis::JoinHandle<T>: the handle of a spawned task (tokio's JoinHandle).
#pragma once

#include <atomic>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "trellis/executor.hpp"

namespace trellis {

namespace detail {

class RuntimeCore;
void count_spawn(RuntimeCore& core) noexcept;
void count_finish(RuntimeCore& core, bool failed) noexcept;
// Hands a failure nobody will observe to the runtime's error hook.
void report_unobserved(RuntimeCore& core, std::exception_ptr error) noexcept;

// The completion signature of an operation yielding T or an exception.
template <class T>
struct ExceptionSignature {
  using type = void(std::exception_ptr, T);
};
template <>
struct ExceptionSignature<void> {
  using type = void(std::exception_ptr);
};
template <class T>
using ExceptionSignatureT = typename ExceptionSignature<T>::type;

// A one-byte lock (BasicLockable) for state held by every spawned task, where std::mutex's 40
// bytes would be a tenth of the task: the critical sections are a few stores, and a waiter
// sleeps in the kernel (atomic wait) rather than spinning.
class TinyLock {
 public:
  void lock() noexcept {
    while (locked_.test_and_set(std::memory_order_acquire)) locked_.wait(true);
  }
  void unlock() noexcept {
    locked_.clear(std::memory_order_release);
    locked_.notify_one();
  }

 private:
  std::atomic_flag locked_;
};

// The state a spawned task shares with its JoinHandle and with a pending join().
class JoinStateBase {
 public:
  JoinStateBase(std::shared_ptr<RuntimeCore> core, Executor ex)
      : core_(std::move(core)), executor_(ex) {}
  ~JoinStateBase() {
    if (error_ && !observed_ && !aborted_) report_unobserved(*core_, error_);
  }

  void on_spawn() { count_spawn(*core_); }
  boost::asio::cancellation_slot cancel_slot() { return cancel_.slot(); }
  Executor executor() const { return executor_; }

  // Requests cancellation; the signal is emitted on the task's own worker, as Asio requires.
  void abort(std::shared_ptr<JoinStateBase> self) {
    {
      std::lock_guard lock(mu_);
      if (done_) return;
      aborted_ = true;
    }
    boost::asio::post(executor_, [self = std::move(self)] {
      self->cancel_.emit(boost::asio::cancellation_type::all);
    });
  }

  bool is_finished() const {
    std::lock_guard lock(mu_);
    return done_;
  }

 protected:
  // Records the outcome; returns the pending joiner to resume, if any.
  Runnable* complete(std::exception_ptr error) {
    std::lock_guard lock(mu_);
    done_ = true;
    error_ = std::move(error);
    count_finish(*core_, error_ != nullptr);
    return std::exchange(waiter_, nullptr);
  }

  mutable TinyLock mu_;
  bool done_ = false;
  bool observed_ = false;
  bool aborted_ = false;
  std::exception_ptr error_;
  Runnable* waiter_ = nullptr;

 private:
  std::shared_ptr<RuntimeCore> core_;
  Executor executor_;
  boost::asio::cancellation_signal cancel_;
};

template <class T>
class JoinState : public JoinStateBase {
 public:
  using JoinStateBase::JoinStateBase;
  ~JoinState() {
    if (waiter_ != nullptr) waiter_->discard();
  }

  // `value...` is the task's value (none for void tasks); `error` set means it has none.
  template <class... V>
  void finish(std::exception_ptr error, V&&... value) {
    if constexpr (sizeof...(V) > 0) {
      if (!error) value_.emplace(std::forward<V>(value)...);
    } else if constexpr (std::is_void_v<T>) {
      if (!error) value_.emplace();
    }
    if (Runnable* w = complete(std::move(error))) w->run();
  }

  template <class Handler>
  void join(std::shared_ptr<JoinState> self, Handler handler) {
    {
      std::lock_guard lock(mu_);
      observed_ = true;
      if (!done_) {
        waiter_ = make_runnable([self, h = std::move(handler)]() mutable {
          self->deliver(std::move(h), /*from_initiation=*/false);
        });
        return;
      }
    }
    deliver(std::move(handler), /*from_initiation=*/true);
  }

 private:
  // Hands the outcome to the joiner. From inside join() itself (the task had already finished)
  // it is posted, never run inline: an operation must not complete inside its initiating
  // function (Asio's rule), or `for (auto& h : handles) co_await h.join();` over finished tasks
  // would nest one resumption per handle and overflow the stack.
  template <class Handler>
  void deliver(Handler h, bool from_initiation) {
    auto ex = boost::asio::get_associated_executor(h, executor());
    auto send = [&](auto fn) {
      if (from_initiation) {
        boost::asio::post(ex, std::move(fn));
      } else {
        boost::asio::dispatch(ex, std::move(fn));
      }
    };
    // Only one join() may consume the value; later ones see it moved-from.
    if constexpr (std::is_void_v<T>) {
      send([h = std::move(h), e = error_]() mutable { std::move(h)(e); });
    } else {
      T value = value_ ? std::move(*value_) : T();
      send([h = std::move(h), e = error_, v = std::move(value)]() mutable {
        std::move(h)(e, std::move(v));
      });
    }
  }

  struct Empty {};
  std::optional<std::conditional_t<std::is_void_v<T>, Empty, T>> value_;
};

// The completion handler of a spawned task. If the runtime discards the task unfinished (it
// shut down), the handler is destroyed without being called and completes the join state with an
// error, so a joiner never waits forever.
template <class T>
class JoinCompletion {
 public:
  explicit JoinCompletion(std::shared_ptr<JoinState<T>> state) : state_(std::move(state)) {}
  JoinCompletion(JoinCompletion&&) noexcept = default;
  JoinCompletion& operator=(JoinCompletion&&) = delete;
  ~JoinCompletion() {
    if (state_) {
      state_->finish(std::make_exception_ptr(
          std::runtime_error("task dropped unfinished: its runtime shut down")));
    }
  }

  template <class... V>
  void operator()(std::exception_ptr e, V&&... value) {
    auto state = std::move(state_);
    state->finish(std::move(e), std::forward<V>(value)...);
  }

 private:
  std::shared_ptr<JoinState<T>> state_;
};

}  // namespace detail

// Owns the right to join or abort a spawned task. Dropping the handle detaches the task: it keeps
// running, and if it then fails, the failure goes to the runtime's error hook instead of being
// lost. Move-only.
template <class T>
class JoinHandle {
 public:
  explicit JoinHandle(std::shared_ptr<detail::JoinState<T>> state) : state_(std::move(state)) {}
  JoinHandle(JoinHandle&&) noexcept = default;
  JoinHandle& operator=(JoinHandle&&) noexcept = default;

  // Waits for the task and yields its value, or rethrows its exception (a task aborted while
  // suspended ends with boost::system::system_error(operation_aborted)). Join at most once.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto join(Token&& token = {}) {
    return boost::asio::async_initiate<Token, detail::ExceptionSignatureT<T>>(
        [](auto handler, std::shared_ptr<detail::JoinState<T>> state) {
          auto* raw = state.get();
          raw->join(std::move(state), std::move(handler));
        },
        token, state_);
  }

  // Requests terminal cancellation of the task: the operation it is suspended in (a timer, an
  // RPC) completes with operation_aborted, or the next one it starts does. No effect once the
  // task has finished.
  void abort() { state_->abort(state_); }

  bool is_finished() const { return state_->is_finished(); }
  Executor executor() const { return state_->executor(); }

 private:
  std::shared_ptr<detail::JoinState<T>> state_;
};

}  // namespace trellis
