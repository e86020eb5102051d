// Compile check of generated code: implements every generated service base of the golden protos
// and calls every generated client method, the way user code does. It is never run; it fails the
// build when the generator and the framework API drift apart. Compiled with TRELLIS_WARNINGS.
#include <trellis/client.hpp>
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
using ::trellis::Status;
using ::trellis::Task;

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
