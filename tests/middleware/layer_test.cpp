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
#include "trellis/message_observer.hpp"
#include "trellis/scoped_layer.hpp"
#include "trellis/stack.hpp"

namespace trellis::testing {
namespace {

using namespace std::chrono_literals;

// A thread-safe list of events, which layers and handlers append to. Destroyed under its lock:
// the calls that order the last append before it travel through libgrpc, where
// ThreadSanitizer cannot see them.
class Trace {
 public:
  ~Trace() { std::lock_guard lock(mu_); }
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

// Records each message it sees as "<name> <recv|sent> <message field>", and rejects the message
// whose field is `reject` with INVALID_ARGUMENT.
class RecordingObserver final : public MessageObserver {
 public:
  RecordingObserver(Trace* trace, std::string name, std::string reject)
      : trace_(trace), name_(std::move(name)), reject_(std::move(reject)) {}
  Status on_received(const google::protobuf::MessageLite& message) override {
    return see("recv", message);
  }
  Status on_sent(const google::protobuf::MessageLite& message) override {
    return see("sent", message);
  }

 private:
  Status see(const char* direction, const google::protobuf::MessageLite& message) {
    std::string text = message.GetTypeName() == EchoRequest().GetTypeName()
                           ? static_cast<const EchoRequest&>(message).message()
                           : static_cast<const EchoResponse&>(message).message();
    trace_->add(name_ + " " + direction + " " + text);
    if (!reject_.empty() && text == reject_) {
      return Status::invalid_argument(name_ + " rejected " + text);
    }
    return Status();
  }

  Trace* trace_;
  std::string name_;
  std::string reject_;
};

// docs/middleware.md's example observer, as it stands there.
class MessageSizeCap final : public trellis::MessageObserver {
 public:
  explicit MessageSizeCap(std::size_t max) : max_(max) {}
  trellis::Status on_received(const google::protobuf::MessageLite& m) override { return check(m); }
  trellis::Status on_sent(const google::protobuf::MessageLite& m) override { return check(m); }

 private:
  trellis::Status check(const google::protobuf::MessageLite& m) const {
    if (m.ByteSizeLong() <= max_) return trellis::Status();
    return trellis::Status::resource_exhausted("a streamed message is too large");
  }
  std::size_t max_;
};

// A layer whose observer sees each message of the call's stream.
auto observing(Trace* trace, std::string name, std::string reject = "") {
  return layer_fn([trace, name, reject](Call& call, const auto& next) -> Task<Status> {
    RecordingObserver observer(trace, name, reject);
    call.observe_messages(observer);
    co_return co_await next(call);
  });
}

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
  struct Fields {
    std::string path, service, name, request, response, metadata;
    RpcKind kind = RpcKind::kBidiStreaming;
    Idempotency idempotency = Idempotency::kUnknown;
    Side side = Side::kClient;
    StatusCode code = StatusCode::kUnknown;
  };
  // Written by the layer and read by the test under one lock (the response that orders them
  // travels through libgrpc, where ThreadSanitizer cannot see it).
  struct Seen {
    std::mutex mu;
    Fields fields;
    Fields get() {
      std::lock_guard lock(mu);
      return fields;
    }
  };
  auto seen = std::make_shared<Seen>();
  start([&](Server::Builder& b) {
    b.layer(layer_fn([seen](Call& call, const auto& next) -> Task<Status> {
      Fields f;
      f.path = call.method().path;
      f.service = call.method().service();
      f.name = call.method().name();
      f.kind = call.method().kind;
      f.idempotency = call.method().idempotency;
      f.side = call.side();
      f.request = static_cast<const EchoRequest*>(call.request())->message();
      f.metadata = call.request_metadata().get("x-layer").value_or("");
      Status status = co_await next(call);
      f.code = status.code();
      if (status.ok()) f.response = static_cast<EchoResponse*>(call.response())->message();
      std::lock_guard lock(seen->mu);
      seen->fields = std::move(f);
      co_return status;
    }));
  });
  EchoClient client(channel_);
  auto r = run(client.IdempotentEcho(with_message("ping"),
                                     CallOptions().set_timeout(30s).add_metadata("x-layer", "v")));
  ASSERT_TRUE(r.ok()) << r.status();
  Fields ok = seen->get();
  EXPECT_EQ(ok.path, "/trellis.testing.Echo/IdempotentEcho");
  EXPECT_EQ(ok.service, "trellis.testing.Echo");
  EXPECT_EQ(ok.name, "IdempotentEcho");
  EXPECT_EQ(ok.kind, RpcKind::kUnary);
  EXPECT_EQ(ok.idempotency, Idempotency::kIdempotent);  // from the proto's option
  EXPECT_EQ(ok.side, Side::kServer);
  EXPECT_EQ(ok.request, "ping");
  EXPECT_EQ(ok.metadata, "v");
  EXPECT_EQ(ok.code, StatusCode::kOk);
  EXPECT_EQ(ok.response, "ping");

  EchoRequest failing;
  failing.set_status_code(static_cast<int>(StatusCode::kNotFound));
  auto f = run(client.Echo(failing, CallOptions().set_timeout(30s)));
  EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
  Fields failed = seen->get();
  EXPECT_EQ(failed.code, StatusCode::kNotFound);
  EXPECT_EQ(failed.idempotency, Idempotency::kUnknown);
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
  {  // the streams are dropped before shut_down() destroys the runtime they run on
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
  shut_down();  // the handlers' layers have all returned once the server has shut down
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

TEST_F(LayerTest, ClientStreamCancelledBeforeItStartsFailsItsOperations) {
  start();
  Trace trace;
  StreamerClient client(channel_.with_layer(stream_recorder(&trace)));
  auto split = client.Split(with_message("a b"), CallOptions().set_timeout(30s));
  auto chat = client.Chat(CallOptions().set_timeout(30s));
  split.cancel();
  chat.cancel();
  run([&]() -> Task<void> {
    EXPECT_FALSE((co_await split.read()).has_value());
    Status split_status = co_await split.finish();
    EXPECT_EQ(split_status.code(), StatusCode::kCancelled) << split_status;
    EXPECT_FALSE(co_await chat.write(with_message("x")));
    EXPECT_FALSE((co_await chat.read()).has_value());
    Status chat_status = co_await chat.finish();
    EXPECT_EQ(chat_status.code(), StatusCode::kCancelled) << chat_status;
  }());
  // The layers saw both calls end; the server saw neither.
  EXPECT_EQ(trace.events(), (std::vector<std::string>{"Split a b 1 header=", "Chat - 1 header="}));
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
  shut_down();  // and checks that no call object is left
  EXPECT_EQ(trace.events(), (std::vector<std::string>{"Chat - 1 header="}));
}

class MessageObserverTest : public MiddlewareTest {
 protected:
  // One after another, so that the observers' trace is in order: a Chat echoing "a" and "b", a
  // Collect of "x" and "y", a Split of "p q".
  void make_calls(const Channel& channel) {
    StreamerClient client(channel);
    auto chat = client.Chat(CallOptions().set_timeout(30s));
    auto collect = client.Collect(CallOptions().set_timeout(30s));
    auto split = client.Split(with_message("p q"), CallOptions().set_timeout(30s));
    run([&]() -> Task<void> {
      for (const char* m : {"a", "b"}) {
        EXPECT_TRUE(co_await chat.write(with_message(m)));
        auto echoed = co_await chat.read();
        EXPECT_TRUE(echoed.has_value());
      }
      Status chat_status = co_await chat.finish();
      EXPECT_TRUE(chat_status.ok()) << chat_status;
      EXPECT_TRUE(co_await collect.write(with_message("x")));
      EXPECT_TRUE(co_await collect.write(with_message("y")));
      Result<EchoResponse> collected = co_await collect.finish();
      EXPECT_TRUE(collected.ok()) << collected.status();
      while (co_await split.read()) {
      }
      Status split_status = co_await split.finish();
      EXPECT_TRUE(split_status.ok()) << split_status;
    }());
  }

  // A Chat that sends "ok" then `second`, and a Split of `words`: what the caller got of each.
  struct Rejected {
    std::vector<std::string> chat_echoes, split_words;
    bool second_write = false;
    Status chat, split;
  };
  Rejected make_rejected_calls(const Channel& channel, const std::string& second,
                               const std::string& words) {
    StreamerClient client(channel);
    auto chat = client.Chat(CallOptions().set_timeout(30s));
    auto split = client.Split(with_message(words), CallOptions().set_timeout(30s));
    Rejected out;
    run([&]() -> Task<void> {
      EXPECT_TRUE(co_await chat.write(with_message("ok")));
      if (auto echoed = co_await chat.read()) out.chat_echoes.push_back(echoed->message());
      out.second_write = co_await chat.write(with_message(second));
      while (auto echoed = co_await chat.read()) out.chat_echoes.push_back(echoed->message());
      out.chat = co_await chat.finish();
      while (auto word = co_await split.read()) out.split_words.push_back(word->message());
      out.split = co_await split.finish();
    }());
    return out;
  }

  // What an observer rejecting "bad" left of make_rejected_calls(..., "bad", "p bad q"): the
  // handler never read the rejected request, the caller never got the rejected response, and
  // both calls ended with the observer's status.
  void expect_rejected_bad(const Rejected& r) {
    EXPECT_EQ(r.chat_echoes, (std::vector<std::string>{"ok"}));
    EXPECT_EQ(r.chat.code(), StatusCode::kInvalidArgument) << r.chat;
    EXPECT_EQ(r.chat.message(), "guard rejected bad");
    EXPECT_EQ(streamer_.observed.requests_read.load(), 1);
    EXPECT_EQ(r.split_words, (std::vector<std::string>{"p"}));
    EXPECT_EQ(r.split.code(), StatusCode::kInvalidArgument) << r.split;
    EXPECT_EQ(r.split.message(), "guard rejected bad");
  }
};

TEST_F(MessageObserverTest, ServerLayersSeeEachStreamedMessageInStackOrder) {
  Trace trace;
  start([&](Server::Builder& b) {
    b.layer(Stack().layer(observing(&trace, "outer")).layer(observing(&trace, "inner")));
  });
  make_calls(channel_);
  // Requests meet the outer layer first, responses the inner one. Collect's response and
  // Split's request are the layers' call.response() and call.request(), not streamed past them.
  EXPECT_EQ(trace.events(),
            (std::vector<std::string>{
                "outer recv a", "inner recv a", "inner sent a", "outer sent a",  // Chat
                "outer recv b", "inner recv b", "inner sent b", "outer sent b",  //
                "outer recv x", "inner recv x", "outer recv y", "inner recv y",  // Collect
                "inner sent p", "outer sent p", "inner sent q", "outer sent q",  // Split
            }));
}

TEST_F(MessageObserverTest, ClientLayersSeeEachStreamedMessageInStackOrder) {
  start();
  Trace trace;
  make_calls(channel_.with_layer(
      Stack().layer(observing(&trace, "outer")).layer(observing(&trace, "inner"))));
  // Requests meet the outer layer first, responses the inner one. A client-streaming call's
  // response comes through the stream as well; a server-streaming call's request is the
  // layers' call.request().
  EXPECT_EQ(trace.events(),
            (std::vector<std::string>{
                "outer sent a", "inner sent a", "inner recv a", "outer recv a",  // Chat
                "outer sent b", "inner sent b", "inner recv b", "outer recv b",  //
                "outer sent x", "inner sent x", "outer sent y", "inner sent y",  // Collect
                "inner recv x,y", "outer recv x,y",                              //
                "inner recv p", "outer recv p", "inner recv q", "outer recv q",  // Split
            }));
}

TEST_F(MessageObserverTest, ServerObserverRejectingAMessageEndsTheCallWithItsStatus) {
  Trace trace;
  start([&](Server::Builder& b) { b.layer(observing(&trace, "guard", "bad")); });
  Rejected r = make_rejected_calls(channel_, "bad", "p bad q");
  // The client's write of the rejected request succeeded: the server's observer rejected it.
  EXPECT_TRUE(r.second_write);
  expect_rejected_bad(r);
}

TEST_F(MessageObserverTest, ClientObserverRejectingAMessageEndsTheCallWithItsStatus) {
  start();
  Trace trace;
  Rejected r =
      make_rejected_calls(channel_.with_layer(observing(&trace, "guard", "bad")), "bad", "p bad q");
  // The rejected request was not sent: the write failed.
  EXPECT_FALSE(r.second_write);
  expect_rejected_bad(r);
}

TEST_F(MessageObserverTest, DocumentedSizeCapRejectsALargeMessage) {
  start([](Server::Builder& b) {
    b.layer(trellis::layer_fn(
        [](trellis::Call& call, const auto& next) -> trellis::Task<trellis::Status> {
          MessageSizeCap observer(16);  // lives in this frame until the call is over
          call.observe_messages(observer);
          co_return co_await next(call);
        }));
  });
  Rejected r = make_rejected_calls(channel_, std::string(64, 'x'), "p q");
  EXPECT_EQ(r.chat_echoes, (std::vector<std::string>{"ok"}));
  EXPECT_EQ(r.chat.code(), StatusCode::kResourceExhausted) << r.chat;
  EXPECT_EQ(r.split_words, (std::vector<std::string>{"p", "q"}));
  EXPECT_TRUE(r.split.ok()) << r.split;
}

}  // namespace
}  // namespace trellis::testing
