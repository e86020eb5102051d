// trellis::sync::Semaphore.
#include "trellis/sync/semaphore.hpp"

namespace trellis::sync {

namespace detail {

void SemaphoreState::grant(ReadyList& ready) {
  while (auto* w = static_cast<AcquireWaiter*>(waiters.front())) {
    if (w->wanted > permits) break;
    waiters.remove(w);
    permits -= w->wanted;
    w->permit = SemaphorePermit(shared_from_this(), w->wanted);
    ready.add(w);
  }
}

SemaphorePermit SemaphoreState::make_permit(std::size_t n) {
  return SemaphorePermit(shared_from_this(), n);
}

bool AcquireWaiter::revoke(WaitState& state, ReadyList& ready) {
  auto& s = static_cast<SemaphoreState&>(state);
  if (!permit) return false;
  s.permits += permit.count_;
  permit.forget();
  s.grant(ready);
  return true;
}

WaitList* semaphore_try_acquire(SemaphoreState& state, AcquireWaiter& w) {
  if (state.closed) {
    w.ec = Errc::closed;
    return nullptr;
  }
  if (state.waiters.empty() && state.permits >= w.wanted) {
    state.permits -= w.wanted;
    if (w.wanted > 0) w.permit = state.make_permit(w.wanted);
    return nullptr;
  }
  return &state.waiters;
}

}  // namespace detail

SemaphorePermit& SemaphorePermit::operator=(SemaphorePermit&& other) noexcept {
  if (this != &other) {
    release();
    state_ = std::move(other.state_);
    count_ = std::exchange(other.count_, 0);
  }
  return *this;
}

void SemaphorePermit::release() {
  if (!state_) return;
  std::shared_ptr<detail::SemaphoreState> state = std::move(state_);
  {
    detail::ReadyList ready;
    std::lock_guard lock(state->mu);
    state->permits += std::exchange(count_, 0);
    state->grant(ready);
  }
}

Semaphore::Semaphore(std::size_t permits)
    : state_(std::make_shared<detail::SemaphoreState>(permits)) {}

Semaphore::~Semaphore() { close(); }

SemaphorePermit Semaphore::try_acquire(std::size_t n) {
  std::lock_guard lock(state_->mu);
  if (state_->closed || !state_->waiters.empty() || state_->permits < n || n == 0) return {};
  state_->permits -= n;
  return SemaphorePermit(state_, n);
}

void Semaphore::add_permits(std::size_t n) {
  detail::ReadyList ready;
  std::lock_guard lock(state_->mu);
  state_->permits += n;
  state_->grant(ready);
}

std::size_t Semaphore::available_permits() const {
  std::lock_guard lock(state_->mu);
  return state_->permits;
}

void Semaphore::close() {
  detail::ReadyList ready;
  std::lock_guard lock(state_->mu);
  state_->closed = true;
  ready.claim_all(state_->waiters, Errc::closed);
}

}  // namespace trellis::sync
