// trellis::sync::Notify.
#include "trellis/sync/notify.hpp"

namespace trellis::sync {

namespace detail {

void NotifyState::notify_one_locked(ReadyList& ready) {
  if (auto* w = static_cast<NotifyWaiter*>(waiters.pop_front())) {
    w->by_one = true;
    ready.add(w);
  } else {
    permit = true;
  }
}

bool NotifyWaiter::revoke(WaitState& state, ReadyList& ready) {
  auto& s = static_cast<NotifyState&>(state);
  if (by_one && !s.closed) s.notify_one_locked(ready);
  return true;
}

WaitList* notify_try_wait(NotifyState& state, NotifyWaiter& w) {
  if (state.closed) {
    w.ec = Errc::closed;
    return nullptr;
  }
  if (state.permit) {
    state.permit = false;
    return nullptr;
  }
  return &state.waiters;
}

}  // namespace detail

Notify::Notify() : state_(std::make_shared<detail::NotifyState>()) {}

Notify::~Notify() {
  detail::ReadyList ready;
  std::lock_guard lock(state_->mu);
  state_->closed = true;
  ready.claim_all(state_->waiters, Errc::closed);
}

void Notify::notify_one() {
  detail::ReadyList ready;
  std::lock_guard lock(state_->mu);
  state_->notify_one_locked(ready);
}

void Notify::notify_all() {
  detail::ReadyList ready;
  std::lock_guard lock(state_->mu);
  ready.claim_all(state_->waiters, {});
}

}  // namespace trellis::sync
