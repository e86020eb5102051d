// Internal: the type-erased unit of work queued on a Trellis worker.
#pragma once

#include <utility>

namespace trellis::detail {

// An intrusive, single-shot piece of work. Exactly one of run() or discard() is called, and
// either one frees the object.
class Runnable {
 public:
  Runnable* next = nullptr;
  // Frees the object, then runs the work (so that memory is recycled before the work runs).
  virtual void run() = 0;
  // Frees the object without running the work (the runtime is shutting down).
  virtual void discard() = 0;

 protected:
  ~Runnable() = default;
};

template <class F>
class FnRunnable final : public Runnable {
 public:
  template <class G>
  explicit FnRunnable(G&& g) : f_(std::forward<G>(g)) {}
  void run() override {
    F f(std::move(f_));
    delete this;
    std::move(f)();
  }
  void discard() override { delete this; }

 private:
  F f_;
};

template <class F>
Runnable* make_runnable(F&& f) {
  return new FnRunnable<std::decay_t<F>>(std::forward<F>(f));
}

// Every tag that Trellis places on a gRPC completion queue points at one of these.
class Completion {
 public:
  virtual void complete(bool ok) = 0;

 protected:
  ~Completion() = default;
};

}  // namespace trellis::detail
