// trellis::sync::Notify: wakes tasks waiting for an event (tokio::sync::Notify).
#pragma once

#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>
#include <memory>
#include <tuple>

#include "trellis/sync/detail/waiter.hpp"
#include "trellis/sync/error.hpp"

namespace trellis::sync {

namespace detail {

class NotifyState final : public WaitState {
 public:
  // Claims the first waiter, or stores the permit when there is none. Under `mu`.
  void notify_one_locked(ReadyList& ready);

  bool permit = false;
  bool closed = false;
  WaitList waiters;
};

struct NotifyWaiter : Waiter {
  bool by_one = false;  // woken by notify_one: a cancellation passes the notification on
  std::tuple<boost::system::error_code> take_results() { return {ec}; }
  bool revoke(WaitState& state, ReadyList& ready) override;
};

// async_wait's first step: consumes the permit, or returns the list to wait in.
WaitList* notify_try_wait(NotifyState& state, NotifyWaiter& w);

}  // namespace detail

// Notifies tasks of an event, with no data. Any thread may notify and wait.
//
// Differences from tokio::sync::Notify: a waiter is registered when async_wait is initiated
// (tokio's Notified registers when first polled or enabled), and destroying the Notify completes
// waiters with Errc::closed.
class Notify {
 public:
  Notify();
  Notify(const Notify&) = delete;
  Notify& operator=(const Notify&) = delete;
  // Completes pending waits with Errc::closed.
  ~Notify();

  // Wakes the longest-waiting task; with none waiting, stores a single permit (permits do not
  // accumulate) that the next async_wait consumes at once.
  void notify_one();
  // Wakes every task waiting now. Stores no permit.
  void notify_all();

  // Waits for a notification. Completes with void(error_code): success when notified (or a
  // permit was stored), operation_aborted if cancelled, Errc::closed if the Notify is destroyed.
  // Cancellation-safe: a wait cancelled after notify_one chose it passes the notification on to
  // the next waiter, or stores it as the permit.
  template <class Token = boost::asio::use_awaitable_t<>>
  auto async_wait(Token&& token = {}) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
        [](auto handler, std::shared_ptr<detail::NotifyState> state) {
          auto* s = state.get();
          detail::start_wait<detail::NotifyWaiter>(
              std::move(handler), std::move(state),
              [s](detail::NotifyWaiter& w, detail::ReadyList&) {
                return detail::notify_try_wait(*s, w);
              });
        },
        token, state_);
  }

 private:
  std::shared_ptr<detail::NotifyState> state_;
};

}  // namespace trellis::sync
