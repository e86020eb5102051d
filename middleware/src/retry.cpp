#include "trellis/middleware/retry.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"

namespace trellis {

bool RetryPolicy::retryable(StatusCode code) const {
  return std::find(retryable_codes.begin(), retryable_codes.end(), code) != retryable_codes.end();
}

std::chrono::milliseconds RetryPolicy::backoff_bound(int retry) const {
  double bound = static_cast<double>(initial_backoff.count()) *
                 std::pow(backoff_multiplier, std::max(0, retry - 1));
  bound = std::min(bound, static_cast<double>(max_backoff.count()));
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::max(0.0, bound)));
}

RetryBudget::RetryBudget(int max_tokens, double token_ratio)
    : max_milli_(static_cast<std::int64_t>(max_tokens) * 1000),
      ratio_milli_(static_cast<std::int64_t>(std::lround(token_ratio * 1000))),
      milli_(max_milli_) {}

bool RetryBudget::allows_retry() const {
  return milli_.load(std::memory_order_relaxed) > max_milli_ / 2;
}

void RetryBudget::record_failure() {
  std::int64_t current = milli_.load(std::memory_order_relaxed);
  while (!milli_.compare_exchange_weak(current, std::max<std::int64_t>(0, current - 1000),
                                       std::memory_order_relaxed)) {
  }
}

void RetryBudget::record_success() {
  std::int64_t current = milli_.load(std::memory_order_relaxed);
  while (current < max_milli_ &&
         !milli_.compare_exchange_weak(current, std::min(max_milli_, current + ratio_milli_),
                                       std::memory_order_relaxed)) {
  }
}

double RetryBudget::tokens() const {
  return static_cast<double>(milli_.load(std::memory_order_relaxed)) / 1000.0;
}

namespace detail {

Pushback read_pushback(const Metadata& trailers) {
  std::optional<std::string_view> value = trailers.get("grpc-retry-pushback-ms");
  if (!value) return {};
  std::int64_t ms = 0;
  // A6: a value that is not a non-negative integer means "do not retry".
  if (!absl::SimpleAtoi(std::string(*value), &ms) || ms < 0) return {Pushback::kStop};
  return {Pushback::kDelay, std::chrono::milliseconds(ms)};
}

std::chrono::milliseconds jitter(std::chrono::milliseconds bound) {
  if (bound.count() <= 0) return std::chrono::milliseconds(0);
  thread_local absl::BitGen gen;
  return std::chrono::milliseconds(absl::Uniform<std::int64_t>(gen, 0, bound.count()));
}

bool time_left_for(const Call& call, std::chrono::milliseconds delay) {
  auto deadline = call.deadline();
  return !deadline || std::chrono::system_clock::now() + delay < *deadline;
}

}  // namespace detail
}  // namespace trellis
