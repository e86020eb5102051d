// trellis::AuthLayer: checks a call's credentials before the handler runs; BearerTokenLayer:
// sends them from the client.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "trellis/hook_layer.hpp"
#include "trellis/layer.hpp"

namespace trellis {

// Decides whether a call may proceed: OK lets it through; any other status is the call's answer
// (by convention UNAUTHENTICATED when credentials are missing or malformed, PERMISSION_DENIED
// when they are valid but not allowed). A check may attach what it learned (the principal) to
// call.extensions(), where the handler finds it. Shared by all calls on all threads: it must be
// thread-safe. An exception thrown by a check ends the call like a handler's exception
// (INTERNAL).
using AuthCheck = std::function<Status(Call&)>;
// The same decision taken asynchronously (asking a token service, a cache that may refresh).
using AsyncAuthCheck = std::function<Task<Status>(Call&)>;

// Runs a check before the inner service and answers the call with the check's status when it is
// not OK: on the server the handler never runs (and the request is never seen by it); on the
// client the call is never sent. The check sees everything a layer sees (the method, the request
// metadata, the peer, the request message of unary and server-streaming calls), so it can be
// scoped per method with for_methods / when.
class AuthLayer : public HookLayerBase<AuthLayer> {
 public:
  explicit AuthLayer(AuthCheck check) : sync_(std::make_shared<AuthCheck>(std::move(check))) {}
  // An asynchronous check (a coroutine): awaited on the call's own worker.
  static AuthLayer async(AsyncAuthCheck check) {
    return AuthLayer(std::make_shared<AsyncAuthCheck>(std::move(check)));
  }
  // The layer of a BearerTokenChecker over `accepted_tokens`.
  static AuthLayer bearer(std::vector<std::string> accepted_tokens);

  // A hook layer (hook_layer.hpp): a synchronous check decides in before(); an asynchronous one
  // is awaited in wait().
  struct State {};
  HookDecision before(Call& call, State&) const {
    if (!sync_) return HookDecision::wait();
    Status verdict = (*sync_)(call);
    return verdict.ok() ? HookDecision::proceed() : HookDecision::answer(std::move(verdict));
  }
  Task<std::optional<Status>> wait(Call& call, State&) const {
    Status verdict = co_await (*async_)(call);
    if (verdict.ok()) co_return std::nullopt;
    co_return verdict;
  }
  void after(Call&, State&, CallOutcome&) const {}

 private:
  explicit AuthLayer(std::shared_ptr<AsyncAuthCheck> check) : async_(std::move(check)) {}

  std::shared_ptr<AuthCheck> sync_;
  std::shared_ptr<AsyncAuthCheck> async_;
};

// An AuthCheck for bearer tokens (RFC 6750) in the `authorization` request metadata:
//  - no `authorization` entry, or one that is not "Bearer <token>" (the scheme matched without
//    regard to case, the token non-empty): UNAUTHENTICATED;
//  - a token that is not one of the accepted ones: PERMISSION_DENIED;
//  - an accepted token: OK.
// The status messages never repeat the token. Lookup is a hash-set probe (not constant-time: the
// token set is meant for service-to-service secrets behind TLS, not as a defence against timing
// attacks on a public endpoint).
class BearerTokenChecker {
 public:
  explicit BearerTokenChecker(std::vector<std::string> accepted_tokens);
  Status operator()(const Call& call) const;

  // The token of an "authorization" value "Bearer <token>"; empty when it is not one.
  static std::string_view parse(std::string_view authorization);

 private:
  struct Tokens;
  std::shared_ptr<const Tokens> tokens_;
};

// Client side: adds "authorization: Bearer <token>" to each outgoing call's metadata, unless the
// caller set an `authorization` entry itself (the caller's explicit choice wins). On the server it
// does nothing. Put it inside a retry layer or outside it: it adds the entry once either way.
class BearerTokenLayer : public HookLayerBase<BearerTokenLayer> {
 public:
  explicit BearerTokenLayer(std::string_view token)
      : value_(std::make_shared<const std::string>(std::string("Bearer ").append(token))) {}

  // A hook layer (hook_layer.hpp).
  struct State {};
  HookDecision before(Call& call, State&) const {
    if (call.is_client() && !call.request_metadata().contains("authorization")) {
      call.options()->add_metadata("authorization", *value_);
    }
    return HookDecision::proceed();
  }
  void after(Call&, State&, CallOutcome&) const {}

 private:
  std::shared_ptr<const std::string> value_;
};

}  // namespace trellis
