// Status, Result and Metadata: the value types of the call API.
#include <gtest/gtest.h>

#include "trellis/metadata.hpp"
#include "trellis/result.hpp"
#include "trellis/status.hpp"

namespace trellis {
namespace {

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.ToString(), "OK");
}

TEST(StatusTest, AllSeventeenCodesHaveCanonicalNames) {
  const char* names[] = {"OK",
                         "CANCELLED",
                         "UNKNOWN",
                         "INVALID_ARGUMENT",
                         "DEADLINE_EXCEEDED",
                         "NOT_FOUND",
                         "ALREADY_EXISTS",
                         "PERMISSION_DENIED",
                         "RESOURCE_EXHAUSTED",
                         "FAILED_PRECONDITION",
                         "ABORTED",
                         "OUT_OF_RANGE",
                         "UNIMPLEMENTED",
                         "INTERNAL",
                         "UNAVAILABLE",
                         "DATA_LOSS",
                         "UNAUTHENTICATED"};
  for (int i = 0; i < 17; ++i) {
    EXPECT_EQ(StatusCodeName(static_cast<StatusCode>(i)), names[i]);
    StatusCode parsed;
    ASSERT_TRUE(ParseStatusCode(names[i], &parsed));
    EXPECT_EQ(static_cast<int>(parsed), i);
  }
  EXPECT_EQ(StatusCodeName(static_cast<StatusCode>(99)), "UNKNOWN_CODE(99)");
  StatusCode parsed;
  EXPECT_FALSE(ParseStatusCode("NOPE", &parsed));
}

TEST(StatusTest, CarriesMessageAndDetails) {
  Status s(StatusCode::kNotFound, "no such user", std::string("\x01\x00", 2));
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "no such user");
  EXPECT_EQ(s.details().size(), 2u);
  EXPECT_EQ(s.ToString(), "NOT_FOUND: no such user");
  EXPECT_EQ(Status::unavailable("x").code(), StatusCode::kUnavailable);
}

TEST(ResultTest, HoldsValueOrStatus) {
  Result<int> ok = 5;
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 5);
  EXPECT_TRUE(ok.status().ok());

  Result<int> err = Status::permission_denied("no");
  EXPECT_FALSE(err.ok());
  EXPECT_EQ(err.status().code(), StatusCode::kPermissionDenied);
  EXPECT_THROW(err.value(), BadResultAccess);
}

TEST(ResultTest, OkStatusIsNotAValue) {
  Result<int> r = Status();
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
}

TEST(MetadataTest, KeepsOrderAndRepeats) {
  Metadata md;
  md.add("a", "1").add("b", "2").add("a", "3");
  EXPECT_EQ(md.get("a"), "1");
  EXPECT_EQ(md.get_all("a"), (std::vector<std::string_view>{"1", "3"}));
  EXPECT_FALSE(md.get("c").has_value());
  EXPECT_EQ(md.size(), 3u);
}

}  // namespace
}  // namespace trellis
