// The middleware core: how layers compose and what they see, on the server and the client, over
// real loopback calls.
#include "trellis/layer.hpp"

#include <gtest/gtest.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "fixture.hpp"
#include "trellis/client_stream.hpp"
#include "trellis/hook_layer.hpp"
#include "trellis/scoped_layer.hpp"
#include "trellis/stack.hpp"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;

// A thread-safe list of events, which layers and handlers append to.
class Trace {
 public:
  void add(std::string event) {
    std::lock_guard lock(mu_);
    events_.push_back(std::move(event));
  }
  std::vector<std::string> events() {
    std::lock_guard lock(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> events_;
};

// A layer that records "<name> in" before and "<name> out <code>" after the inner service.
auto recording(Trace* trace, std::string name) {
  return layer_fn([trace, name](Call& call, const auto& next) -> Task<Status> {
    trace->add(name + " in");
    Status status = co_await next(call);
    trace->add(name + " out " + std::to_string(static_cast<int>(status.code())));
    co_return status;
  });
}

// A static layer type written by hand, the way stock layers are: a layer and its service.
class PrefixLayer {
 public:
  explicit PrefixLayer(std::string prefix) : prefix_(std::move(prefix)) {}

  template <CallService S>
  class Service {
   public:
    Service(std::string prefix, S inner) : prefix_(std::move(prefix)), inner_(std::move(inner)) {}
    // Changes the reply the handler gave: what a server layer can do with call.response().
    Task<Status> operator()(Call& call) const {
      Status status = co_await inner_(call);
      if (status.ok()) {
        auto* reply = static_cast<EchoResponse*>(call.response());
        reply->set_message(prefix_ + reply->message());
      }
      co_return status;
    }

   private:
    std::string prefix_;
    S inner_;
  };

  template <CallService S>
  Service<S> wrap(S inner) const {
    return Service<S>(prefix_, std::move(inner));
  }

 private:
  std::string prefix_;
};
static_assert(Layer<PrefixLayer>);

// A hook layer (hook_layer.hpp): records "<name> in" and "<name> out <code>" ("<name> out threw"
// when the inner service threw); can answer instead of going on, and can turn an exception into
// UNAVAILABLE.
class RecordingHooks : public HookLayerBase<RecordingHooks> {
 public:
  RecordingHooks(Trace* trace, std::string name, std::optional<Status> answer = std::nullopt,
                 bool rescue = false)
      : trace_(trace), name_(std::move(name)), answer_(std::move(answer)), rescue_(rescue) {}

  struct State {
    bool entered = false;
  };
  HookDecision before(Call&, State& state) const {
    trace_->add(name_ + " in");
    state.entered = true;
    if (answer_) return HookDecision::answer(*answer_);
    return HookDecision::proceed();
  }
  void after(Call&, State& state, CallOutcome& outcome) const {
    EXPECT_TRUE(state.entered);
    if (outcome.error) {
      trace_->add(name_ + " out threw");
      if (rescue_) {
        outcome.error = nullptr;
        outcome.status = Status::unavailable("rescued");
      }
      return;
    }
    trace_->add(name_ + " out " + std::to_string(static_cast<int>(outcome.status.code())));
  }

 private:
  Trace* trace_;
  std::string name_;
  std::optional<Status> answer_;
  bool rescue_;
};
static_assert(HookLayer<RecordingHooks>);

// Adjacent hook layers share one service (one coroutine frame per call); a coroutine layer
// between them splits the run.
static_assert(std::is_same_v<decltype(Stack()
                                          .layer(RecordingHooks(nullptr, "a"))
                                          .layer(RecordingHooks(nullptr, "b"))
                                          .wrap(BoxService())),
                             detail::HookChain<BoxService, RecordingHooks, RecordingHooks>>);

using LayerTest = MiddlewareTest;

TEST_F(LayerTest, HookLayersRunInDeclaredOrderAmongCoroutineLayers) {
  Trace trace;
  start([&](Server::Builder& b) {
    b.layer(Stack()
                .layer(recording(&trace, "a"))
                .layer(RecordingHooks(&trace, "b"))
                .layer(RecordingHooks(&trace, "c"))
                .layer(recording(&trace, "d"))
                .layer(RecordingHooks(&trace, "e")));
  });
  auto r = run(EchoClient(channel_).Echo(with_message("hi"), CallOptions().set_timeout(30s)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(trace.events(),
            (std::vector<std::string>{"a in", "b in", "c in", "d in", "e in", "e out 0", "d out 0",
                                      "c out 0", "b out 0", "a out 0"}));
}

TEST_F(LayerTest, HookLayerThatAnswersSkipsWhatIsInsideIt) {
  Trace trace;
  start([&](Server::Builder& b) {
    b.layer(Stack()
                .layer(RecordingHooks(&trace, "outer"))
                .layer(RecordingHooks(&trace, "gate", Status::permission_denied("not today")))
                .layer(RecordingHooks(&trace, "inner")));
  });
  auto r = run(EchoClient(channel_).Echo(with_message("x"), CallOptions().set_timeout(30s)));
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(r.status().message(), "not today");
  EXPECT_EQ(echo_.observed.calls.load(), 0);
  // The gate's own after() does not run; the outer layer's sees the gate's answer.
  EXPECT_EQ(trace.events(), (std::vector<std::string>{"outer in", "gate in", "outer out 7"}));
}

TEST_F(LayerTest, HookLayerSeesAnExceptionAndMayTurnItIntoAStatus) {
  Trace trace;
  start([&](Server::Builder& b) {
    b.layer(Stack()
                .layer(RecordingHooks(&trace, "outer"))
                .layer(RecordingHooks(&trace, "rescuer", std::nullopt, /*rescue=*/true))
                .layer(RecordingHooks(&trace, "inner")));
  });
  EchoRequest request = with_message("x");
  request.set_throw_exception(true);
  auto r = run(EchoClient(channel_).Echo(request, CallOptions().set_timeout(30s)));
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(r.status().message(), "rescued");
  EXPECT_EQ(trace.events(),
            (std::vector<std::string>{"outer in", "rescuer in", "inner in", "inner out threw",
                                      "rescuer out threw", "outer out 14"}));
}

TEST_F(LayerTest, ExceptionThroughHookLayersStillAnswersInternal) {
  Trace trace;
  start([&](Server::Builder& b) {
    b.layer(Stack().layer(RecordingHooks(&trace, "outer")).layer(RecordingHooks(&trace, "inner")));
  });
  EchoRequest request = with_message("x");
  request.set_throw_exception(true);
  EchoClient client(channel_);
  auto r = run(client.Echo(request, CallOptions().set_timeout(30s)));
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  EXPECT_EQ(trace.events(), (std::vector<std::string>{"outer in", "inner in", "inner out threw",
                                                      "outer out threw"}));
  auto ok = run(client.Echo(with_message("fine"), CallOptions().set_timeout(30s)));
  EXPECT_TRUE(ok.ok()) << ok.status();
}

TEST_F(LayerTest, HookLayersWorkOnTheClient) {
  Trace trace;
  start();
  Channel layered = channel_.with_layer(
      Stack().layer(RecordingHooks(&trace, "outer")).layer(RecordingHooks(&trace, "inner")));
  auto r = run(EchoClient(layered).Echo(with_message("x"), CallOptions().set_timeout(30s)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(trace.events(),
            (std::vector<std::string>{"outer in", "inner in", "inner out 0", "outer out 0"}));
}

TEST_F(LayerTest, ServerLayersRunInDeclaredOrderAroundTheHandler) {
  Trace trace;
  start([&](Server::Builder& b) {
    b.layer(recording(&trace, "outer")).layer(recording(&trace, "inner"));
  });
  auto r = run(EchoClient(channel_).Echo(with_message("hi"), CallOptions().set_timeout(30s)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(trace.events(),
            (std::vector<std::string>{"outer in", "inner in", "inner out 0", "outer out 0"}));
}

TEST_F(LayerTest, ServerLayerSeesMethodRequestResponseAndStatus) {
  struct Seen {
    std::string path, service, name, request, response, metadata;
    RpcKind kind = RpcKind::kBidiStreaming;
    Idempotency idempotency = Idempotency::kUnknown;
    Side side = Side::kClient;
    StatusCode code = StatusCode::kUnknown;
  };
  auto seen = std::make_shared<Seen>();
  start([&](Server::Builder& b) {
    b.layer(layer_fn([seen](Call& call, const auto& next) -> Task<Status> {
      seen->path = call.method().path;
      seen->service = call.method().service();
      seen->name = call.method().name();
      seen->kind = call.method().kind;
      seen->idempotency = call.method().idempotency;
      seen->side = call.side();
      seen->request = static_cast<const EchoRequest*>(call.request())->message();
      seen->metadata = call.request_metadata().get("x-layer").value_or("");
      Status status = co_await next(call);
      seen->code = status.code();
      if (status.ok()) seen->response = static_cast<EchoResponse*>(call.response())->message();
      co_return status;
    }));
  });
  EchoClient client(channel_);
  auto r = run(client.IdempotentEcho(with_message("ping"),
                                     CallOptions().set_timeout(30s).add_metadata("x-layer", "v")));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(seen->path, "/trellis.testing.Echo/IdempotentEcho");
  EXPECT_EQ(seen->service, "trellis.testing.Echo");
  EXPECT_EQ(seen->name, "IdempotentEcho");
  EXPECT_EQ(seen->kind, RpcKind::kUnary);
  EXPECT_EQ(seen->idempotency, Idempotency::kIdempotent);  // from the proto's option
  EXPECT_EQ(seen->side, Side::kServer);
  EXPECT_EQ(seen->request, "ping");
  EXPECT_EQ(seen->metadata, "v");
  EXPECT_EQ(seen->code, StatusCode::kOk);
  EXPECT_EQ(seen->response, "ping");

  EchoRequest failing;
  failing.set_status_code(static_cast<int>(StatusCode::kNotFound));
  auto f = run(client.Echo(failing, CallOptions().set_timeout(30s)));
  EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(seen->code, StatusCode::kNotFound);
  EXPECT_EQ(seen->idempotency, Idempotency::kUnknown);
}

TEST_F(LayerTest, ServerLayerCanRewriteTheResponse) {
  start([](Server::Builder& b) { b.layer(PrefixLayer("layered: ")); });
  auto r = run(EchoClient(channel_).Echo(with_message("x"), CallOptions().set_timeout(30s)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "layered: x");
}

TEST_F(LayerTest, LayerThatAnswersItselfSkipsTheHandler) {
  start([](Server::Builder& b) {
    b.layer(layer_fn([](Call&, const auto&) -> Task<Status> {
      co_return Status::permission_denied("not today");
    }));
  });
  auto r = run(EchoClient(channel_).Echo(with_message("x"), CallOptions().set_timeout(30s)));
  EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(r.status().message(), "not today");
  EXPECT_EQ(echo_.observed.calls.load(), 0);
}

TEST_F(LayerTest, ThrowingLayerAnswersInternalAndTheServerLives) {
  start([](Server::Builder& b) {
    b.layer(layer_fn([](Call& call, const auto& next) -> Task<Status> {
      if (static_cast<const EchoRequest*>(call.request())->message() == "boom") {
        throw std::runtime_error("layer exploded on purpose");
      }
      co_return co_await next(call);
    }));
  });
  EchoClient client(channel_);
  auto r = run(client.Echo(with_message("boom"), CallOptions().set_timeout(30s)));
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  auto ok = run(client.Echo(with_message("fine"), CallOptions().set_timeout(30s)));
  EXPECT_TRUE(ok.ok()) << ok.status();
}

TEST_F(LayerTest, ServiceLayersRunInsideServerLayers) {
  Trace trace;
  start([&](Server::Builder& b) { b.layer(recording(&trace, "server")); },
        recording(&trace, "echo service"));
  auto r = run(EchoClient(channel_).Echo(with_message("x"), CallOptions().set_timeout(30s)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(trace.events(), (std::vector<std::string>{"server in", "echo service in",
                                                      "echo service out 0", "server out 0"}));
  // The Streamer service has no service layer: only the server's.
  ClientReader<EchoResponse> split =
      StreamerClient(channel_).Split(with_message("a b"), CallOptions().set_timeout(30s));
  Status status = run([&]() -> Task<Status> {
    while (co_await split.read()) {
    }
    co_return co_await split.finish();
  }());
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(trace.events().size(), 6u);
  EXPECT_EQ(trace.events()[4], "server in");
}

TEST_F(LayerTest, ScopedLayersApplyToTheirMethodsOnly) {
  Trace trace;
  start([&](Server::Builder& b) {
    b.layer(for_methods({"/trellis.testing.Echo/IdempotentEcho"}, recording(&trace, "method")))
        .layer(for_service("trellis.testing.Streamer", recording(&trace, "streamer")))
        .layer(when([](const MethodInfo& m) { return m.safe_to_repeat(); },
                    recording(&trace, "idempotent")));
  });
  EchoClient client(channel_);
  ASSERT_TRUE(run(client.Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());
  EXPECT_TRUE(trace.events().empty());
  ASSERT_TRUE(run(client.IdempotentEcho(with_message("x"), CallOptions().set_timeout(30s))).ok());
  EXPECT_EQ(trace.events(), (std::vector<std::string>{"method in", "idempotent in",
                                                      "idempotent out 0", "method out 0"}));
}

TEST_F(LayerTest, StaticStackAndDynStackComposeInTheSameOrder) {
  Trace trace;
  DynStack dynamic;
  dynamic.push(recording(&trace, "dyn 1")).push(recording(&trace, "dyn 2"));
  start([&](Server::Builder& b) {
    b.layer(Stack().layer(recording(&trace, "static 1")).layer(recording(&trace, "static 2")))
        .layer(dynamic);
  });
  ASSERT_TRUE(
      run(EchoClient(channel_).Echo(with_message("x"), CallOptions().set_timeout(30s))).ok());
  EXPECT_EQ(trace.events(), (std::vector<std::string>{"static 1 in", "static 2 in", "dyn 1 in",
                                                      "dyn 2 in", "dyn 2 out 0", "dyn 1 out 0",
                                                      "static 2 out 0", "static 1 out 0"}));
}

TEST_F(LayerTest, ServerLayerWrapsEveryStreamingKind) {
  struct Seen {
    std::mutex mu;
    std::vector<std::string> events;
  };
  auto seen = std::make_shared<Seen>();
  start([&](Server::Builder& b) {
    b.layer(layer_fn([seen](Call& call, const auto& next) -> Task<Status> {
      std::string request = call.request() != nullptr
                                ? static_cast<const EchoRequest*>(call.request())->message()
                                : "-";
      Status status = co_await next(call);
      std::string response = status.ok() && call.response() != nullptr
                                 ? static_cast<EchoResponse*>(call.response())->message()
                                 : "-";
      std::lock_guard lock(seen->mu);
      seen->events.push_back(std::string(call.method().name()) + " " + request + " " + response +
                             " " + std::to_string(static_cast<int>(status.code())));
      co_return status;
    }));
  });
  {  // the streams are dropped before stop() destroys the runtime they run on
    StreamerClient client(channel_);
    auto split = client.Split(with_message("a b c"), CallOptions().set_timeout(30s));
    auto collect = client.Collect(CallOptions().set_timeout(30s));
    auto chat = client.Chat(CallOptions().set_timeout(30s));
    run([&]() -> Task<void> {
      int n = 0;
      while (co_await split.read()) ++n;
      EXPECT_EQ(n, 3);
      EXPECT_TRUE((co_await split.finish()).ok());
      EXPECT_TRUE(co_await collect.write(with_message("x")));
      EXPECT_TRUE(co_await collect.write(with_message("y")));
      Result<EchoResponse> collected = co_await collect.finish();
      EXPECT_TRUE(collected.ok()) << collected.status();
      EXPECT_TRUE(co_await chat.write(with_message("hello")));
      EXPECT_TRUE(co_await chat.read());
      EXPECT_TRUE((co_await chat.finish()).ok());
    }());
  }
  stop();  // the handlers' layers have all returned once the server has shut down
  EXPECT_EQ(seen->events,
            (std::vector<std::string>{"Split a b c - 0", "Collect - x,y 0", "Chat - - 0"}));
}

TEST_F(LayerTest, ClientLayersSeeTheCallAndShapeIt) {
  start();
  Trace trace;
  struct Seen {
    std::string request, response, echoed_header;
    Side side = Side::kServer;
    bool committed = false;
    std::optional<std::chrono::system_clock::time_point> deadline;
  };
  auto seen = std::make_shared<Seen>();
  Channel layered =
      channel_.with_layer(recording(&trace, "inner"))
          .with_layer(Stack()
                          .layer(recording(&trace, "outer"))
                          .layer(layer_fn([seen](Call& call, const auto& next) -> Task<Status> {
                            seen->side = call.side();
                            seen->request =
                                static_cast<const EchoRequest*>(call.request())->message();
                            call.options()->add_metadata("echo-added", "by a layer");
                            seen->deadline = call.deadline();
                            Status status = co_await next(call);
                            seen->committed = call.committed();
                            seen->echoed_header =
                                call.response_metadata().initial.get("echo-added").value_or("");
                            if (status.ok()) {
                              seen->response =
                                  static_cast<EchoResponse*>(call.response())->message();
                            }
                            co_return status;
                          })));
  EchoRequest req = with_message("hello");
  req.set_echo_metadata(true);
  ResponseMetadata md;
  auto r = run(
      EchoClient(layered).Echo(req, CallOptions().set_timeout(30s).capture_response_metadata(&md)));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->message(), "hello");
  EXPECT_EQ(seen->side, Side::kClient);
  EXPECT_EQ(seen->request, "hello");
  EXPECT_EQ(seen->response, "hello");
  EXPECT_EQ(seen->echoed_header, "by a layer");
  EXPECT_TRUE(seen->committed);
  ASSERT_TRUE(seen->deadline.has_value());
  EXPECT_GT(*seen->deadline, std::chrono::system_clock::now());
  EXPECT_EQ(md.trailing.get("echo-added"), "by a layer");  // the caller still gets its capture
  // with_layer() puts the new layer outside the existing ones.
  EXPECT_EQ(trace.events(),
            (std::vector<std::string>{"outer in", "inner in", "inner out 0", "outer out 0"}));
  // The original handle has no layers.
  ASSERT_TRUE(run(EchoClient(channel_).Echo(req, CallOptions().set_timeout(30s))).ok());
  EXPECT_EQ(trace.events().size(), 4u);
}

TEST_F(LayerTest, ClientLayerCanAnswerWithoutCallingAndCanCallTwice) {
  start();
  Channel refusing = channel_.with_layer(layer_fn([](Call&, const auto&) -> Task<Status> {
    co_return Status::unavailable("refused by the client stack");
  }));
  auto r = run(EchoClient(refusing).Echo(with_message("x"), CallOptions().set_timeout(30s)));
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(echo_.observed.calls.load(), 0);

  Channel twice = channel_.with_layer(layer_fn([](Call& call, const auto& next) -> Task<Status> {
    Status first = co_await next(call);
    if (!first.ok()) co_return first;
    co_return co_await next(call);
  }));
  auto t = run(EchoClient(twice).Echo(with_message("x"), CallOptions().set_timeout(30s)));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(echo_.observed.calls.load(), 2);
}

TEST_F(LayerTest, ClientLayerSeesTheServersStatus) {
  start();
  auto code = std::make_shared<std::atomic<int>>(-1);
  Channel layered =
      channel_.with_layer(layer_fn([code](Call& call, const auto& next) -> Task<Status> {
        Status status = co_await next(call);
        code->store(static_cast<int>(status.code()));
        co_return status;
      }));
  EchoRequest req;
  req.set_status_code(static_cast<int>(StatusCode::kAborted));
  req.set_status_message("aborted on purpose");
  auto r = run(EchoClient(layered).Echo(req, CallOptions().set_timeout(30s)));
  EXPECT_EQ(r.status().code(), StatusCode::kAborted);
  EXPECT_EQ(r.status().message(), "aborted on purpose");
  EXPECT_EQ(code->load(), static_cast<int>(StatusCode::kAborted));
}

// Records, per call, the method name, the request (server streaming), and the final status.
auto stream_recorder(Trace* trace) {
  return layer_fn([trace](Call& call, const auto& next) -> Task<Status> {
    std::string request = call.request() != nullptr
                              ? static_cast<const EchoRequest*>(call.request())->message()
                              : "-";
    call.options()->add_metadata("echo-layer", "client stack");
    Status status = co_await next(call);
    trace->add(std::string(call.method().name()) + " " + request + " " +
               std::to_string(static_cast<int>(status.code())) + " header=" +
               std::string(call.response_metadata().initial.get("echo-layer").value_or("")));
    co_return status;
  });
}

TEST_F(LayerTest, ClientLayersWrapEveryStreamingKind) {
  start();
  Trace trace;
  StreamerClient client(channel_.with_layer(stream_recorder(&trace)));
  EchoRequest split_request = with_message("a b c");
  split_request.set_echo_metadata(true);
  ResponseMetadata md;
  auto split =
      client.Split(split_request, CallOptions().set_timeout(30s).capture_response_metadata(&md));
  auto collect = client.Collect(CallOptions().set_timeout(30s));
  auto chat = client.Chat(CallOptions().set_timeout(30s));
  run([&]() -> Task<void> {
    std::vector<std::string> words;
    while (auto m = co_await split.read()) words.push_back(m->message());
    EXPECT_EQ(words, (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_TRUE((co_await split.finish()).ok());
    EXPECT_TRUE(co_await collect.write(with_message("x")));
    EXPECT_TRUE(co_await collect.write(with_message("y")));
    Result<EchoResponse> collected = co_await collect.finish();
    EXPECT_TRUE(collected.ok()) << collected.status();
    if (collected.ok()) {
      EXPECT_EQ(collected->message(), "x,y");
    }
    EXPECT_TRUE(co_await chat.write(with_message("hello")));
    auto echoed = co_await chat.read();
    EXPECT_TRUE(echoed.has_value());
    EXPECT_TRUE((co_await chat.finish()).ok());
  }());
  // The layer's metadata reached the server (Split echoes it) and the caller's capture still works.
  EXPECT_EQ(md.trailing.get("echo-layer"), "client stack");
  EXPECT_EQ(trace.events(), (std::vector<std::string>{"Split a b c 0 header=client stack",
                                                      "Collect - 0 header=", "Chat - 0 header="}));
}

TEST_F(LayerTest, ClientLayerRefusingAStreamFailsItsOperations) {
  start();
  StreamerClient client(channel_.with_layer(layer_fn([](Call&, const auto&) -> Task<Status> {
    co_return Status::permission_denied("streams refused by the client stack");
  })));
  auto chat = client.Chat(CallOptions().set_timeout(30s));
  auto collect = client.Collect(CallOptions().set_timeout(30s));
  run([&]() -> Task<void> {
    EXPECT_FALSE(co_await chat.write(with_message("x")));
    EXPECT_FALSE((co_await chat.read()).has_value());
    Status status = co_await chat.finish();
    EXPECT_EQ(status.code(), StatusCode::kPermissionDenied);
    EXPECT_EQ(status.message(), "streams refused by the client stack");
    Result<EchoResponse> collected = co_await collect.finish();
    EXPECT_EQ(collected.status().code(), StatusCode::kPermissionDenied);
  }());
  EXPECT_EQ(streamer_.observed.requests_read.load(), 0);
}

TEST_F(LayerTest, ClientLayerCanRewriteAStreamsStatus) {
  start();
  StreamerClient client(
      channel_.with_layer(layer_fn([](Call& call, const auto& next) -> Task<Status> {
        Status status = co_await next(call);
        if (status.code() == StatusCode::kNotFound)
          co_return Status::unavailable("mapped by a layer");
        co_return status;
      })));
  EchoRequest req = with_message("a");
  req.set_status_code(static_cast<int>(StatusCode::kNotFound));
  auto split = client.Split(req, CallOptions().set_timeout(30s));
  Status status = run([&]() -> Task<Status> {
    while (co_await split.read()) {
    }
    co_return co_await split.finish();
  }());
  EXPECT_EQ(status.code(), StatusCode::kUnavailable);
  EXPECT_EQ(status.message(), "mapped by a layer");
}

TEST_F(LayerTest, DroppedClientStreamStillEndsItsStackAndLeaksNothing) {
  start();
  Trace trace;
  StreamerClient client(channel_.with_layer(stream_recorder(&trace)));
  {
    auto chat = client.Chat(CallOptions().set_timeout(30s));
    run([&]() -> Task<void> {
      EXPECT_TRUE(co_await chat.write(with_message("hello")));
      EXPECT_TRUE((co_await chat.read()).has_value());
    }());
  }  // dropped without finish(): cancelled
  { auto never_used = client.Chat(CallOptions().set_timeout(30s)); }
  server_->shutdown(std::chrono::seconds(10));
  server_.reset();
  runtime_->shutdown(std::chrono::seconds(10));
  EXPECT_EQ(trace.events(), (std::vector<std::string>{"Chat - 1 header="}));
  RuntimeMetrics metrics = runtime_->metrics();
  EXPECT_EQ(metrics.client_calls, 0);
  EXPECT_EQ(metrics.server_calls, 0);
}

}  // namespace
}  // namespace trellis::testing
