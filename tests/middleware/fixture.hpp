// A Trellis server (Echo and Streamer) and runtime for middleware tests, with the server's
// layers given by the test. TearDown (EndToEndTest) checks that no call object outlives its call.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>

#include "echo_service.hpp"
#include "end_to_end.hpp"
#include "streamer_service.hpp"
#include "trellis/client.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"

namespace trellis::testing {

// Starts a server on a free loopback port, on the transport TRELLIS_TEST_TRANSPORT names (the
// suites run once per transport). `configure` adds layers to the builder before the services
// are added (Builder::layer order is the stack order).
class MiddlewareTest : public EndToEndTest {
 protected:
  void start(const std::function<void(Server::Builder&)>& configure = {},
             BoxLayer echo_layer = {}) {
    if (!runtime_) runtime_ = Runtime::multi_thread().worker_threads(2).build();
    Server::Builder builder(*runtime_);
    builder.transport(transport_from_environment()).add_insecure_port("127.0.0.1:0");
    if (configure) configure(builder);
    builder.add_service(echo_, std::move(echo_layer)).add_service(streamer_);
    auto server = builder.build();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    target_ = "127.0.0.1:" + std::to_string(server_->port());
    channel_ = Channel::insecure(target_);
  }

  // Starts another server on the fixture's runtime, serving `service` behind `layer`. The test
  // owns it and must destroy it before TearDown (a local, or a member it shuts down first).
  std::unique_ptr<Server> start_other(Service& service, BoxLayer layer = {}) {
    auto server = Server::Builder(*runtime_)
                      .transport(transport_from_environment())
                      .add_insecure_port("127.0.0.1:0")
                      .layer(std::move(layer))
                      .add_service(service)
                      .build();
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? std::move(server).value() : nullptr;
  }

  static EchoRequest with_message(std::string m) {
    EchoRequest req;
    req.set_message(std::move(m));
    return req;
  }

  EchoImpl echo_;
  StreamerImpl streamer_;
  std::string target_;
  Channel channel_{nullptr};
};

}  // namespace trellis::testing
