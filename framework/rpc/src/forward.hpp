// Internal: a completion-queue tag that calls a member function of its owner.
#pragma once

#include <type_traits>

#include "trellis/detail/runnable.hpp"
#include "trellis/executor.hpp"

namespace trellis::detail {

// A member Completion that forwards to a method of its owner: one per kind of gRPC operation an
// object has in flight, so the owner needs no tag bookkeeping.
template <class Owner, void (Owner::*Fn)(bool)>
class Forward final : public Completion {
 public:
  explicit Forward(Owner* owner) : owner_(owner) {}
  void complete(bool ok) override { (owner_->*Fn)(ok); }

 private:
  Owner* owner_;
};

// A completion-queue tag that is a base class of its owner, which it finds by a static_cast
// instead of a pointer: 8 bytes a tag instead of Forward's 16, for objects held by the hundred
// thousand (a server stream). The owner derives publicly from OpTag<Owner, K> for each kind K of
// gRPC operation it has in flight, and defines on_complete(OpKind<K>, bool) for each (befriending
// OpTag if private).
template <int K>
using OpKind = std::integral_constant<int, K>;

template <class Owner, int K>
class OpTag : public Completion {
 public:
  void complete(bool ok) final { static_cast<Owner*>(this)->on_complete(OpKind<K>{}, ok); }

 protected:
  ~OpTag() = default;
};

// Completes `op` with `args` from worker `w`'s queue, not inline: for an operation that fails
// while it is being started, when its awaiting coroutine has not suspended yet.
template <class Op, class... Args>
void complete_later(Worker* w, Op* op, Args... args) {
  post(w,
       make_runnable([op, ... a = std::move(args)]() mutable { op->complete(std::move(a)...); }));
}

// Completing an operation resumes the coroutine that awaited it, inline; that coroutine may
// finish, drop its handle or end the call, re-entering the object whose callback is running.
// An object that frees itself opens a CallbackScope in every callback and frees only when the
// outermost one closes: Owner::maybe_free() must return early while callback_depth() > 0.
template <class Owner>
class CallbackScope {
 public:
  explicit CallbackScope(Owner* owner) : owner_(owner) { ++owner_->callback_depth_; }
  ~CallbackScope() {
    if (--owner_->callback_depth_ == 0) owner_->maybe_free();
  }
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;

 private:
  Owner* owner_;
};

}  // namespace trellis::detail
