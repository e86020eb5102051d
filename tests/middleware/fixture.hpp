// A Trellis server (Echo and Streamer) and runtime for middleware tests, with the server's
// layers given by the test.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>

#include "echo_service.hpp"
#include "streamer_service.hpp"
#include "trellis/client.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"

namespace trellis::testing {

// Starts a server on a free loopback port. `configure` adds layers to the builder before the
// services are added (Builder::layer order is the stack order).
class MiddlewareTest : public ::testing::Test {
 protected:
  void TearDown() override { stop(); }

  void start(const std::function<void(Server::Builder&)>& configure = {},
             BoxLayer echo_layer = {}) {
    if (!runtime_) runtime_ = Runtime::multi_thread().worker_threads(2).build();
    Server::Builder builder(*runtime_);
    builder.add_insecure_port("127.0.0.1:0");
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
                      .add_insecure_port("127.0.0.1:0")
                      .layer(std::move(layer))
                      .add_service(service)
                      .build();
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? std::move(server).value() : nullptr;
  }

  void stop() {
    if (server_) server_->shutdown(std::chrono::seconds(10));
    server_.reset();
    runtime_.reset();
  }

  template <class T>
  T run(Task<T> task) {
    return runtime_->block_on(std::move(task));
  }

  static EchoRequest with_message(std::string m) {
    EchoRequest req;
    req.set_message(std::move(m));
    return req;
  }

  std::unique_ptr<Runtime> runtime_;
  EchoImpl echo_;
  StreamerImpl streamer_;
  std::unique_ptr<Server> server_;
  std::string target_;
  Channel channel_{nullptr};
};

}  // namespace trellis::testing
