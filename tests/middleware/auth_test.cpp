// The auth layers: a server-side check before the handler (bearer tokens, custom and asynchronous
// checks) and the client-side bearer token, over real loopback calls.
#include "trellis/middleware/auth.hpp"

#include <gtest/gtest.h>

#include <boost/asio/post.hpp>
#include <memory>
#include <stdexcept>
#include <string>

#include "fixture.hpp"
#include "trellis/client_stream.hpp"
#include "trellis/scoped_layer.hpp"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;

using AuthTest = MiddlewareTest;

CallOptions with_authorization(std::string value) {
  return CallOptions().set_timeout(30s).add_metadata("authorization", std::move(value));
}

TEST_F(AuthTest, BearerCheckerAnswersUnauthenticatedWhenTheHeaderIsMissing) {
  start([](Server::Builder& b) { b.layer(AuthLayer::bearer({"s3cret"})); });
  auto r = run(EchoClient(channel_).Echo(with_message("x"), CallOptions().set_timeout(30s)));
  EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated) << r.status();
  EXPECT_EQ(echo_.observed.calls.load(), 0);
}

TEST_F(AuthTest, BearerCheckerAnswersUnauthenticatedWhenTheHeaderIsMalformed) {
  start([](Server::Builder& b) { b.layer(AuthLayer::bearer({"s3cret"})); });
  EchoClient client(channel_);
  for (const char* value : {"s3cret", "Basic s3cret", "Bearer", "Bearer ", "Bearer   ",
                            "Bearers3cret", "Bearer s3cret extra"}) {
    auto r = run(client.Echo(with_message("x"), with_authorization(value)));
    EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated) << value << ": " << r.status();
    EXPECT_EQ(r.status().message().find("s3cret"), std::string::npos) << r.status();
  }
  EXPECT_EQ(echo_.observed.calls.load(), 0);
}

TEST_F(AuthTest, BearerCheckerAnswersPermissionDeniedForAnUnknownToken) {
  start([](Server::Builder& b) { b.layer(AuthLayer::bearer({"s3cret", "other"})); });
  auto r = run(EchoClient(channel_).Echo(with_message("x"), with_authorization("Bearer wrong")));
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied) << r.status();
  EXPECT_EQ(r.status().message().find("wrong"), std::string::npos) << r.status();
  EXPECT_EQ(echo_.observed.calls.load(), 0);
}

TEST_F(AuthTest, BearerCheckerLetsAnAcceptedTokenThrough) {
  start([](Server::Builder& b) { b.layer(AuthLayer::bearer({"s3cret", "other"})); });
  EchoClient client(channel_);
  auto r = run(client.Echo(with_message("x"), with_authorization("Bearer s3cret")));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "x");
  // The scheme is case-insensitive; surrounding blanks are not part of the token.
  EXPECT_TRUE(run(client.Echo(with_message("x"), with_authorization("bearer other "))).ok());
  EXPECT_EQ(echo_.observed.calls.load(), 2);
}

TEST_F(AuthTest, BearerCheckerGuardsServerStreams) {
  start([](Server::Builder& b) { b.layer(AuthLayer::bearer({"s3cret"})); });
  auto split = [&](CallOptions options) -> Task<std::pair<Status, int>> {
    ClientReader<EchoResponse> reader =
        StreamerClient(channel_).Split(with_message("a b"), std::move(options));
    int n = 0;
    while (co_await reader.read()) ++n;
    co_return std::pair(co_await reader.finish(), n);
  };
  auto denied = run(split(CallOptions().set_timeout(30s)));
  EXPECT_EQ(denied.first.code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(denied.second, 0);
  auto allowed = run(split(with_authorization("Bearer s3cret")));
  EXPECT_TRUE(allowed.first.ok()) << allowed.first;
  EXPECT_EQ(allowed.second, 2);
}

TEST_F(AuthTest, ClientBearerTokenLayerMakesCallsPass) {
  start([](Server::Builder& b) { b.layer(AuthLayer::bearer({"s3cret"})); });
  Channel authed = channel_.with_layer(BearerTokenLayer("s3cret"));
  auto r = run(EchoClient(authed).Echo(with_message("x"), CallOptions().set_timeout(30s)));
  ASSERT_TRUE(r.ok()) << r.status();
  // The caller's own authorization entry wins over the layer's.
  auto own = run(EchoClient(authed).Echo(with_message("x"), with_authorization("Bearer nope")));
  EXPECT_EQ(own.status().code(), StatusCode::kPermissionDenied);
  Channel wrong = channel_.with_layer(BearerTokenLayer("nope"));
  auto w = run(EchoClient(wrong).Echo(with_message("x"), CallOptions().set_timeout(30s)));
  EXPECT_EQ(w.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(echo_.observed.calls.load(), 1);
}

TEST_F(AuthTest, ClientBearerTokenLayerSendsTheHeader) {
  auto seen = std::make_shared<std::string>();
  // A server-side check that records what arrived and lets everything through.
  start([&](Server::Builder& b) {
    b.layer(AuthLayer([seen](const Call& call) {
      *seen = std::string(call.request_metadata().get("authorization").value_or(""));
      return Status();
    }));
  });
  Channel authed = channel_.with_layer(BearerTokenLayer("tok"));
  ASSERT_TRUE(run(EchoClient(authed).Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());
  EXPECT_EQ(*seen, "Bearer tok");
}

TEST_F(AuthTest, CustomCheckSeesTheCallAndCanBeScopedToAMethod) {
  start([](Server::Builder& b) {
    b.layer(for_methods({"/trellis.testing.Echo/IdempotentEcho"}, AuthLayer([](const Call& call) {
                          if (call.request_metadata().get("x-role") == "admin") return Status();
                          return Status::permission_denied("admins only");
                        })));
  });
  EchoClient client(channel_);
  EXPECT_TRUE(run(client.Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());
  auto denied = run(client.IdempotentEcho(with_message("x"), CallOptions().set_timeout(30s)));
  EXPECT_EQ(denied.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(denied.status().message(), "admins only");
  auto admin = run(client.IdempotentEcho(
      with_message("x"), CallOptions().set_timeout(30s).add_metadata("x-role", "admin")));
  EXPECT_TRUE(admin.ok()) << admin.status();
  EXPECT_EQ(echo_.observed.calls.load(), 2);
}

TEST_F(AuthTest, AsyncCheckIsAwaitedBeforeTheHandler) {
  start([](Server::Builder& b) {
    b.layer(AuthLayer::async([](Call& call) -> Task<Status> {
      // A suspension, as a real asynchronous check (a token service) would have.
      co_await boost::asio::post(use_task);
      if (call.request_metadata().contains("x-ticket")) co_return Status();
      co_return Status::unauthenticated("no ticket");
    }));
  });
  EchoClient client(channel_);
  auto denied = run(client.Echo(with_message("x"), CallOptions().set_timeout(30s)));
  EXPECT_EQ(denied.status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(denied.status().message(), "no ticket");
  EXPECT_EQ(echo_.observed.calls.load(), 0);
  auto allowed = run(
      client.Echo(with_message("x"), CallOptions().set_timeout(30s).add_metadata("x-ticket", "1")));
  EXPECT_TRUE(allowed.ok()) << allowed.status();
  EXPECT_EQ(echo_.observed.calls.load(), 1);
}

TEST_F(AuthTest, ThrowingCheckAnswersInternalAndTheHandlerDoesNotRun) {
  start([](Server::Builder& b) {
    b.layer(AuthLayer([](const Call&) -> Status { throw std::runtime_error("check exploded"); }));
  });
  auto r = run(EchoClient(channel_).Echo(with_message("x"), CallOptions().set_timeout(30s)));
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  EXPECT_EQ(echo_.observed.calls.load(), 0);
}

TEST_F(AuthTest, ClientSideCheckRefusesWithoutSending) {
  start();
  Channel guarded = channel_.with_layer(AuthLayer::bearer({"s3cret"}));
  auto r = run(EchoClient(guarded).Echo(with_message("x"), CallOptions().set_timeout(30s)));
  EXPECT_EQ(r.status().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(echo_.observed.calls.load(), 0);
  auto ok = run(EchoClient(guarded).Echo(with_message("x"), with_authorization("Bearer s3cret")));
  EXPECT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(echo_.observed.calls.load(), 1);
}

TEST_F(AuthTest, BearerParseAcceptsOnlyOneToken) {
  EXPECT_EQ(BearerTokenChecker::parse("Bearer abc"), "abc");
  EXPECT_EQ(BearerTokenChecker::parse("BEARER abc"), "abc");
  EXPECT_EQ(BearerTokenChecker::parse("Bearer  abc\t"), "abc");
  EXPECT_EQ(BearerTokenChecker::parse("Bearer a b"), "");
  EXPECT_EQ(BearerTokenChecker::parse("Bearer"), "");
  EXPECT_EQ(BearerTokenChecker::parse("Basic abc"), "");
  EXPECT_EQ(BearerTokenChecker::parse("Bearer\tabc"), "");
  EXPECT_EQ(BearerTokenChecker::parse(""), "");
}

}  // namespace
}  // namespace trellis::testing
