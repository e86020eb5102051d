// Fan-out with trellis::sync: one server-streaming Watch RPC per watcher, every watcher seeing
// every update. The publisher sends updates on a broadcast channel; each Watch handler subscribes
// to it and forwards what it receives to its client; a watch channel counts the subscribed
// handlers so that the publisher starts once every watcher is in. Dropping the broadcast sender
// closes the feed: each handler's receive reports Errc::closed and the handler ends its stream
// with OK.
//
// One process runs the server and --watchers clients (on a 2-worker runtime), then prints what
// each watcher received, in a fixed order, and exits 0 if every watcher saw every update.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/sync/broadcast.hpp"
#include "trellis/sync/watch.hpp"
#include "trellis/timer.hpp"
#include "watch_feed.trellis.h"

ABSL_FLAG(int, watchers, 3, "number of watching clients");
ABSL_FLAG(int, updates, 5, "number of updates to publish");

namespace {

namespace sync = trellis::sync;
using trellis::ServerContext;
using trellis::ServerWriter;
using trellis::Status;
using trellis::Task;
using watchfeed::Update;
using watchfeed::WatchRequest;

class FeedImpl final : public watchfeed::FeedService {
 public:
  FeedImpl(sync::broadcast::Sender<Update> updates, sync::watch::Sender<int>& subscribed)
      : updates_(std::move(updates)), subscribed_(subscribed) {}

  // Drops the service's sender: once the publisher's is gone too, every Watch ends.
  void close() { updates_.reset(); }

  Task<Status> Watch(ServerContext&, const WatchRequest&, ServerWriter<Update>& writer) override {
    sync::broadcast::Receiver<Update> rx = updates_->subscribe();
    subscribed_.send_modify([](int& n) { ++n; });
    for (;;) {
      auto [ec, update] = co_await rx.async_receive(boost::asio::as_tuple(trellis::use_task));
      if (ec == sync::Errc::closed) co_return Status();  // the feed closed
      if (ec == sync::Errc::lagged) {
        co_return Status::resource_exhausted("watcher missed " + std::to_string(rx.lagged_by()) +
                                             " updates");
      }
      if (ec) co_return Status::cancelled(ec.message());
      if (!co_await writer.write(update)) co_return Status::cancelled("watcher went away");
    }
  }

 private:
  std::optional<sync::broadcast::Sender<Update>> updates_;
  sync::watch::Sender<int>& subscribed_;
};

// One watcher: the lines it prints, then its final status.
Task<std::vector<std::string>> watch(watchfeed::FeedClient client, std::string name) {
  WatchRequest request;
  request.set_watcher(name);
  auto stream = client.Watch(request);
  std::vector<std::string> lines;
  while (std::optional<Update> u = co_await stream.read()) {
    lines.push_back(name + ": #" + std::to_string(u->sequence()) + " " + u->text());
  }
  Status status = co_await stream.finish();
  lines.push_back(name + ": end " + std::string(trellis::status_code_name(status.code())));
  co_return lines;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int watchers = absl::GetFlag(FLAGS_watchers);
  const int updates = absl::GetFlag(FLAGS_updates);
  auto runtime = trellis::Runtime::multi_thread().worker_threads(2).build();

  auto feed = sync::broadcast::channel<Update>(16);
  sync::broadcast::Sender<Update>& updates_tx = feed.first;
  { auto unused = std::move(feed.second); }  // handlers subscribe their own receivers
  auto count = sync::watch::channel<int>(0);
  sync::watch::Receiver<int>& subscribed_rx = count.second;
  FeedImpl service(updates_tx, count.first);
  auto server = trellis::Server::Builder(*runtime)
                    .add_insecure_port("127.0.0.1:0")
                    .add_service(service)
                    .build();
  if (!server.ok()) {
    std::cerr << "watch_feed: " << server.status() << "\n";
    return 1;
  }
  auto channel = trellis::Channel::insecure("127.0.0.1:" + std::to_string((*server)->port()));

  std::vector<trellis::JoinHandle<std::vector<std::string>>> clients;
  for (int i = 0; i < watchers; ++i) {
    clients.push_back(
        runtime->spawn(runtime->executor(i % 2),
                       watch(watchfeed::FeedClient(channel), "watcher-" + std::to_string(i))));
  }

  bool ok = runtime->block_on([&]() -> Task<bool> {
    // Publish once every watcher's handler has subscribed (bounded: a broken server fails).
    auto wait_all = [&]() -> Task<void> {
      while (*subscribed_rx.borrow_and_update() < watchers) co_await subscribed_rx.async_changed();
    };
    using namespace boost::asio::experimental::awaitable_operators;
    auto ready = co_await (wait_all() || trellis::sleep_for(std::chrono::seconds(30)));
    if (ready.index() != 0) {
      std::fprintf(stderr, "watch_feed: the watchers did not all subscribe\n");
      co_return false;
    }
    for (int i = 1; i <= updates; ++i) {
      Update u;
      u.set_sequence(i);
      u.set_text("update " + std::to_string(i));
      updates_tx.send(std::move(u));
    }
    { auto closed = std::move(updates_tx); }  // the publisher is done...
    service.close();                          // ...and so is the service: the feed closes
    bool all = true;
    for (auto& c : clients) {
      std::vector<std::string> lines = co_await c.join();
      for (const std::string& line : lines) std::printf("%s\n", line.c_str());
      all = all && lines.size() == static_cast<std::size_t>(updates) + 1 &&
            lines.back().ends_with("end OK");
    }
    co_return all;
  }());
  (*server)->shutdown(std::chrono::seconds(5));
  server.value().reset();
  runtime->shutdown();
  std::printf("watch_feed: %s\n", ok ? "every watcher saw every update" : "FAILED");
  return ok ? 0 : 1;
}
