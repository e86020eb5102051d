// trellis::sync::Mutex.
#include "trellis/sync/mutex.hpp"

namespace trellis::sync {

namespace detail {

void MutexState::unlock_locked(ReadyList& ready) {
  if (auto* w = static_cast<LockWaiter*>(waiters.pop_front())) {
    w->guard = MutexGuard(shared_from_this());  // stays locked: ownership moves to `w`
    ready.add(w);
  } else {
    locked = false;
  }
}

MutexGuard MutexState::make_guard() { return MutexGuard(shared_from_this()); }

bool LockWaiter::revoke(WaitState& state, ReadyList& ready) {
  if (!guard) return false;
  guard.state_.reset();  // give up ownership without the locking unlock()
  static_cast<MutexState&>(state).unlock_locked(ready);
  return true;
}

WaitList* mutex_try_lock(MutexState& state, LockWaiter& w) {
  if (state.closed) {
    w.ec = Errc::closed;
    return nullptr;
  }
  if (!state.locked) {
    state.locked = true;
    w.guard = state.make_guard();
    return nullptr;
  }
  return &state.waiters;
}

}  // namespace detail

MutexGuard& MutexGuard::operator=(MutexGuard&& other) noexcept {
  if (this != &other) {
    unlock();
    state_ = std::move(other.state_);
  }
  return *this;
}

void MutexGuard::unlock() {
  if (!state_) return;
  std::shared_ptr<detail::MutexState> state = std::move(state_);
  {
    detail::ReadyList ready;
    std::lock_guard lock(state->mu);
    state->unlock_locked(ready);
  }
}

Mutex::Mutex() : state_(std::make_shared<detail::MutexState>()) {}

Mutex::~Mutex() {
  detail::ReadyList ready;
  std::lock_guard lock(state_->mu);
  state_->closed = true;
  ready.claim_all(state_->waiters, Errc::closed);
}

MutexGuard Mutex::try_lock() {
  std::lock_guard lock(state_->mu);
  if (state_->closed || state_->locked) return {};
  state_->locked = true;
  return MutexGuard(state_);
}

bool Mutex::is_locked() const {
  std::lock_guard lock(state_->mu);
  return state_->locked;
}

}  // namespace trellis::sync
