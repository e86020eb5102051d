// The waiter machinery shared by the trellis::sync primitives, and their error category.
#include "trellis/sync/detail/waiter.hpp"

#include <boost/asio/error.hpp>
#include <string>

#include "trellis/sync/error.hpp"

namespace trellis::sync {

namespace {

class SyncCategory final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "trellis.sync"; }
  std::string message(int ev) const override {
    switch (static_cast<Errc>(ev)) {
      case Errc::closed:
        return "trellis::sync: closed";
      case Errc::lagged:
        return "trellis::sync: receiver lagged behind and missed values";
      case Errc::full:
        return "trellis::sync: channel full";
      case Errc::empty:
        return "trellis::sync: nothing to receive";
    }
    return "trellis::sync: unknown error";
  }
};

}  // namespace

const boost::system::error_category& sync_category() noexcept {
  static const SyncCategory category;
  return category;
}

namespace detail {

void WaitList::push_back(Waiter* w) noexcept {
  w->list = this;
  w->next_waiter = nullptr;
  w->prev_waiter = tail_;
  if (tail_ == nullptr) {
    head_ = w;
  } else {
    tail_->next_waiter = w;
  }
  tail_ = w;
}

void WaitList::remove(Waiter* w) noexcept {
  if (w->prev_waiter == nullptr) {
    head_ = w->next_waiter;
  } else {
    w->prev_waiter->next_waiter = w->next_waiter;
  }
  if (w->next_waiter == nullptr) {
    tail_ = w->prev_waiter;
  } else {
    w->next_waiter->prev_waiter = w->prev_waiter;
  }
  w->prev_waiter = w->next_waiter = nullptr;
  w->list = nullptr;
}

Waiter* WaitList::pop_front() noexcept {
  Waiter* w = head_;
  if (w != nullptr) remove(w);
  return w;
}

void ReadyList::claim_all(WaitList& list, boost::system::error_code ec) noexcept {
  while (Waiter* w = list.pop_front()) {
    w->ec = ec;
    add(w);
  }
}

void ReadyList::flush() {
  Waiter* w = std::exchange(head_, nullptr);
  tail_ = nullptr;
  while (w != nullptr) {
    Waiter* next = w->next_waiter;
    w->complete();
    w = next;
  }
}

void cancel_waiter(WaitState& state, Waiter* w) {
  ReadyList ready;
  {
    std::lock_guard lock(state.mu);
    if (w->list == nullptr) {
      // Claimed, and its handler has not run yet (it would have cleared this handler's slot): a
      // success is taken back where the primitive can, and the op completes aborted instead.
      if (!w->ec && w->revoke(state, ready)) w->ec = boost::asio::error::operation_aborted;
      return;
    }
    w->list->remove(w);
    w->ec = boost::asio::error::operation_aborted;
    ready.add(w);
    state.after_cancel(ready);
  }
}

}  // namespace detail
}  // namespace trellis::sync
