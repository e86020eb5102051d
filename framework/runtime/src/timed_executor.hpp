// Internal: an Asio executor for a worker's reactor whose handlers run as the worker's own
// callbacks do (Worker::run_timed): counted in the runtime's poll metrics, watched by the stall
// watchdog, an escaping exception reported. The native transport's sockets and timers use it
// (Worker::reactor_executor), so that the socket handlers, and the handler code they resume,
// are not invisible to Runtime::metrics() and the watchdog.
#pragma once

#include <boost/asio/execution.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/query.hpp>
#include <boost/asio/require.hpp>
#include <type_traits>
#include <utility>

#include "worker.hpp"

namespace trellis::detail {

// Wraps `Inner` (the reactor's io_context executor): every property is the inner executor's,
// and every function it executes runs through the worker's run_timed.
template <class Inner>
class TimedExecutor {
 public:
  TimedExecutor(Worker* worker, Inner inner) : worker_(worker), inner_(std::move(inner)) {}

  // The reactor never runs out of work (its worker holds a guard on it): tracking each
  // operation's work would only add atomic updates of the io_context's count per operation.
  TimedExecutor require(boost::asio::execution::outstanding_work_t::tracked_t) const {
    return *this;
  }
  TimedExecutor prefer(boost::asio::execution::outstanding_work_t::tracked_t) const {
    return *this;
  }

  template <class Property>
  auto query(const Property& property) const
      -> decltype(boost::asio::query(std::declval<const Inner&>(), property)) {
    return boost::asio::query(inner_, property);
  }
  template <class Property>
  auto require(const Property& property) const -> TimedExecutor<
      std::decay_t<decltype(boost::asio::require(std::declval<const Inner&>(), property))>> {
    return {worker_, boost::asio::require(inner_, property)};
  }
  template <class Property>
  auto prefer(const Property& property) const -> TimedExecutor<
      std::decay_t<decltype(boost::asio::prefer(std::declval<const Inner&>(), property))>> {
    return {worker_, boost::asio::prefer(inner_, property)};
  }

  template <class Function>
  void execute(Function&& f) const {
    using Fn = std::decay_t<Function>;
    inner_.execute([worker = worker_, f = Fn(std::forward<Function>(f))]() mutable {
      worker->run_timed([](void* fn) { (*static_cast<Fn*>(fn))(); }, &f);
    });
  }

  friend bool operator==(const TimedExecutor& a, const TimedExecutor& b) noexcept {
    return a.worker_ == b.worker_ && a.inner_ == b.inner_;
  }
  friend bool operator!=(const TimedExecutor& a, const TimedExecutor& b) noexcept {
    return !(a == b);
  }

 private:
  Worker* worker_;
  Inner inner_;
};

}  // namespace trellis::detail
