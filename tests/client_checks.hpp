// Checks of the Trellis client that hold against any Echo server (Trellis, plain grpc++,
// python grpcio): written once, run against each.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "trellis/testing/echo.trellis.h"

namespace trellis::testing {

// Makes one Echo call on the server under test and waits for it.
using EchoCall = std::function<Result<EchoResponse>(const EchoRequest&, CallOptions)>;

inline const std::string kBinaryValue("\x00\xff\x10 bytes", 8);

inline void CheckEveryStatusCodeRoundTrips(const EchoCall& call) {
  for (int code = 1; code <= 16; ++code) {
    SCOPED_TRACE("code " + std::to_string(code));
    EchoRequest req;
    req.set_status_code(code);
    req.set_status_message("message for " + std::to_string(code));
    req.set_status_details(std::string("\x00\x01\xfe", 3) + char(code));
    auto r = call(req, {});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(static_cast<int>(r.status().code()), code);
    EXPECT_EQ(r.status().message(), req.status_message());
    EXPECT_EQ(r.status().details(), req.status_details());
  }
}

inline void CheckMetadataTravelsBothWays(const EchoCall& call) {
  ResponseMetadata md;
  CallOptions options;
  options.add_metadata("echo-text", "plain value")
      .add_metadata("echo-data-bin", kBinaryValue)
      .add_metadata("not-echoed", "x")
      .capture_response_metadata(&md);
  EchoRequest req;
  req.set_message("md");
  req.set_echo_metadata(true);
  auto r = call(req, options);
  ASSERT_TRUE(r.ok()) << r.status();
  for (const Metadata* m : {&md.initial, &md.trailing}) {
    EXPECT_EQ(m->get("echo-text"), "plain value");
    EXPECT_EQ(m->get("echo-data-bin"), kBinaryValue);
    EXPECT_FALSE(m->contains("not-echoed"));
  }
}

inline void CheckTrailersAndDetailsOnAnError(const EchoCall& call) {
  ResponseMetadata md;
  CallOptions options;
  options.add_metadata("echo-text", "on error")
      .add_metadata("echo-data-bin", kBinaryValue)
      .capture_response_metadata(&md);
  EchoRequest req;
  req.set_echo_metadata(true);
  req.set_status_code(static_cast<int>(StatusCode::kNotFound));
  req.set_status_message("gone");
  req.set_status_details("\x01\x02");
  auto r = call(req, options);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status(), Status(StatusCode::kNotFound, "gone", "\x01\x02"));
  EXPECT_EQ(md.trailing.get("echo-text"), "on error");
  EXPECT_EQ(md.trailing.get("echo-data-bin"), kBinaryValue);
  EXPECT_FALSE(md.trailing.contains("grpc-status-details-bin")) << "reserved keys are left out";
}

}  // namespace trellis::testing
