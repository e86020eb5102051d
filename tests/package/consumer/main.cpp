// Serves consumer.Greeter, health and reflection on a free loopback port and calls Greeter once
// through a client layer of trellis::middleware. Prints the reply and exits 0, or prints the status
// and exits 1.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include "greeter.trellis.h"
#include "trellis/health.hpp"
#include "trellis/middleware/timeout.hpp"
#include "trellis/reflection.hpp"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"

class Greeter final : public consumer::GreeterService {
  trellis::Task<trellis::Result<consumer::HelloReply>> SayHello(
      trellis::ServerContext&, const consumer::HelloRequest& request) override {
    consumer::HelloReply reply;
    reply.set_message("Hello " + request.name());
    co_return reply;
  }
};

int main() {
  auto runtime = trellis::Runtime::multi_thread().worker_threads(2).build();
  Greeter greeter;
  trellis::HealthService health;
  trellis::ReflectionService reflection;
  health.reporter().set_status("consumer.Greeter", trellis::ServingStatus::kServing);
  auto server = trellis::Server::Builder(*runtime)
                    .add_insecure_port("127.0.0.1:0")
                    .add_service(greeter)
                    .add_service(health.service())
                    .add_service(reflection.v1())
                    .build();
  if (!server.ok()) {
    std::cerr << "server: " << server.status() << "\n";
    return 1;
  }
  auto channel = trellis::Channel::insecure("127.0.0.1:" + std::to_string((*server)->port()))
                     .with_layer(trellis::TimeoutLayer(std::chrono::seconds(30)));
  consumer::GreeterClient client(channel);
  consumer::HelloRequest request;
  request.set_name("consumer");
  auto reply = runtime->block_on(client.SayHello(request));
  (*server)->shutdown();
  server.value().reset();
  runtime->shutdown();
  if (!reply.ok()) {
    std::cerr << "call: " << reply.status() << "\n";
    return 1;
  }
  std::cout << reply->message() << "\n";
  return reply->message() == "Hello consumer" ? 0 : 1;
}
