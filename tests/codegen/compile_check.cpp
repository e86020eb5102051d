// Compile check of generated code: implements every generated service base of the golden protos
// and calls every generated client method, unary and streaming, the way user code does. It is
// never run; it fails the build when the generator and the framework API drift apart. Compiled
// with TRELLIS_WARNINGS.
#include <optional>
#include <string>
#include <trellis/client.hpp>
#include <trellis/client_stream.hpp>
#include <trellis/server_stream.hpp>
#include <trellis/service.hpp>
#include <utility>

#include "codegen_test/api/v1/services.trellis.h"
#include "codegen_test/common/types.trellis.h"
#include "no_package.trellis.h"

namespace codegen_check {

namespace v1 = ::codegen_test::api::v1;
namespace common = ::codegen_test::common;
using ::google::protobuf::Empty;
using ::trellis::Result;
using ::trellis::ServerContext;
using ::trellis::ServerReader;
using ::trellis::ServerWriter;
using ::trellis::Status;
using ::trellis::Task;
using LongRequest = v1::AnUnusuallyLongRequestMessageNameForTheWrappingTest;
using LongResponse = v1::AnUnusuallyLongResponseMessageNameForTheWrappingTest;

class EchoImpl final : public v1::EchoService {
 public:
  Task<Result<v1::EchoReply>> Echo(ServerContext&, const v1::EchoRequest& request) override {
    v1::EchoReply reply;
    reply.set_text(request.text());
    co_return reply;
  }
  Task<Result<Empty>> delete_(ServerContext&, const common::Page_Token&) override {
    co_return Empty();
  }
  Task<Result<v1::EchoReply_Item_Detail>> List(ServerContext&, const common::Page&) override {
    co_return Status::unimplemented("List");
  }
  Task<Result<v1::new_>> Create(ServerContext&, const v1::new_& request) override {
    co_return request;
  }
  Task<Result<common::Empty>> requires_(ServerContext&, const Empty&) override {
    co_return common::Empty();
  }
  Task<Result<v1::AnUnusuallyLongResponseMessageNameForTheWrappingTest>>
  AnUnusuallyLongMethodNameForTheWrappingTest(
      ServerContext&, const v1::AnUnusuallyLongRequestMessageNameForTheWrappingTest&) override {
    co_return v1::AnUnusuallyLongResponseMessageNameForTheWrappingTest();
  }

  // Server streaming: one reply per character.
  Task<Status> Split(ServerContext& context, const v1::EchoRequest& request,
                     ServerWriter<v1::EchoReply>& writer) override {
    for (char c : request.text()) {
      v1::EchoReply reply;
      reply.set_text(std::string(1, c));
      if (!co_await writer.write(reply)) co_return Status::cancelled("gone");
    }
    (void)context.is_cancelled();
    co_return Status();
  }
  // Client streaming: all requests joined.
  Task<Result<v1::EchoReply>> Join(ServerContext&, ServerReader<v1::EchoRequest>& reader) override {
    v1::EchoReply reply;
    while (std::optional<v1::EchoRequest> request = co_await reader.read()) {
      reply.mutable_text()->append(request->text());
    }
    co_return reply;
  }
  // Bidi: every request echoed.
  Task<Status> Chat(ServerContext&, ServerReader<v1::EchoRequest>& reader,
                    ServerWriter<v1::EchoReply>& writer) override {
    while (std::optional<v1::EchoRequest> request = co_await reader.read()) {
      v1::EchoReply reply;
      reply.set_text(request->text());
      if (!co_await writer.write(reply)) break;
    }
    co_return Status();
  }
  Task<Status> AnUnusuallyLongServerStreamingMethodName(ServerContext&, const LongRequest&,
                                                        ServerWriter<LongResponse>&) override {
    co_return Status::unimplemented("AnUnusuallyLongServerStreamingMethodName");
  }
  Task<Result<LongResponse>> AnUnusuallyLongClientStreamingMethodName(
      ServerContext&, ServerReader<LongRequest>&) override {
    co_return LongResponse();
  }
  Task<Status> AnUnusuallyLongBidiStreamingMethodName(ServerContext&, ServerReader<LongRequest>&,
                                                      ServerWriter<LongResponse>&) override {
    co_return Status();
  }
};

class AdminImpl final : public v1::AdminService {
 public:
  Task<Result<common::Empty>> Reset(ServerContext&, const common::Empty&) override {
    co_return common::Empty();
  }
};

class IdleImpl final : public v1::IdleService {};

class PingImpl final : public ::PingService {
 public:
  Task<Result<::PingReply>> Ping(ServerContext&, const ::PingRequest&) override {
    co_return ::PingReply();
  }
  Task<Result<::PingReply>> Status(ServerContext&, const common::Empty&) override {
    co_return ::PingReply();
  }
};

// Every client method, with and without call options; clients are copyable values.
Task<bool> CallEverything(const ::trellis::Channel& channel) {
  v1::EchoClient echo(channel);
  v1::EchoClient echo_copy = echo;
  v1::AdminClient admin(channel);
  v1::IdleClient idle(channel);
  ::PingClient ping(channel);
  (void)idle;

  v1::EchoRequest request;
  request.set_text("hello");
  Result<v1::EchoReply> reply =
      co_await echo.Echo(request, ::trellis::CallOptions().add_metadata("k", "v"));
  bool ok = reply.ok();
  ok &= (co_await echo_copy.delete_(common::Page_Token())).ok();
  ok &= (co_await echo.List(common::Page())).ok();
  ok &= (co_await echo.Create(v1::new_())).ok();
  ok &= (co_await echo.requires_(Empty())).ok();
  ok &= (co_await echo.AnUnusuallyLongMethodNameForTheWrappingTest(
             v1::AnUnusuallyLongRequestMessageNameForTheWrappingTest()))
            .ok();
  ok &= (co_await admin.Reset(common::Empty())).ok();
  ok &= (co_await ping.Ping(::PingRequest())).ok();
  ok &= (co_await ping.Status(common::Empty())).ok();

  // Server streaming: read until the end, then the status.
  ::trellis::ClientReader<v1::EchoReply> split =
      echo.Split(request, ::trellis::CallOptions().add_metadata("k", "v"));
  while (std::optional<v1::EchoReply> part = co_await split.read()) ok &= !part->text().empty();
  Status split_status = co_await split.finish();
  ok &= split_status.ok();

  // Client streaming: write, then finish for the response.
  ::trellis::ClientWriter<v1::EchoRequest, v1::EchoReply> join = echo_copy.Join();
  ok &= co_await join.write(request);
  ok &= co_await join.writes_done();
  Result<v1::EchoReply> joined = co_await join.finish();
  ok &= joined.ok();

  // Bidi: write and read, then the status.
  ::trellis::ClientReaderWriter<v1::EchoRequest, v1::EchoReply> chat =
      echo.Chat(::trellis::CallOptions());
  ok &= co_await chat.write(request);
  ok &= (co_await chat.read()).has_value();
  ok &= co_await chat.writes_done();
  ok &= (co_await chat.finish()).ok();

  // The wrapped declarations; streams are move-only values, cancel() ends the call.
  auto long_reader = echo.AnUnusuallyLongServerStreamingMethodName(LongRequest());
  ::trellis::ClientReader<LongResponse> moved_reader = std::move(long_reader);
  moved_reader.cancel();
  auto long_writer = echo.AnUnusuallyLongClientStreamingMethodName();
  ok &= (co_await long_writer.finish()).ok();
  auto long_chat = echo.AnUnusuallyLongBidiStreamingMethodName();
  ok &= co_await long_chat.write(LongRequest());
  ok &= (co_await long_chat.finish()).ok();
  co_return ok;
}

// The implementations are concrete (every pure virtual method is implemented).
[[maybe_unused]] void MakeServices() {
  EchoImpl echo;
  AdminImpl admin;
  IdleImpl idle;
  PingImpl ping;
  (void)echo.name();
}

}  // namespace codegen_check
