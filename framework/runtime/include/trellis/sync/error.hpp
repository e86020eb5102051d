// trellis::sync::Errc: the errors of the synchronisation primitives (trellis/sync/*.hpp).
#pragma once

#include <boost/system/error_code.hpp>
#include <type_traits>

namespace trellis::sync {

// The outcomes, other than success and boost::asio::error::operation_aborted (the operation's
// cancellation slot was signalled), that the operations of trellis::sync report. They are
// boost::system error codes of sync_category(): with the default completion token a failed
// `co_await` throws boost::system::system_error carrying one of them; with
// `boost::asio::as_tuple(trellis::use_task)` or `boost::asio::redirect_error` it is returned.
enum class Errc {
  // The channel or primitive is closed: every sender (or the receiver) is gone, close() was
  // called, or the primitive was destroyed while the operation waited. For a receiver this is
  // reported only once every value sent before the close has been received.
  closed = 1,
  // broadcast: the receiver fell more than the channel's capacity behind and missed values.
  // Receiver::lagged_by() tells how many; the next receive yields the oldest retained value.
  lagged,
  // try_send: the channel is full (the value was not taken).
  full,
  // try_receive: nothing to receive now.
  empty,
};

// The category of Errc ("trellis.sync").
const boost::system::error_category& sync_category() noexcept;

inline boost::system::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), sync_category()};
}

}  // namespace trellis::sync

template <>
struct boost::system::is_error_code_enum<trellis::sync::Errc> : std::true_type {};
