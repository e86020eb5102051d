// Status, Result and Metadata: the value types of the call API.
#include "trellis/status.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <type_traits>
#include <utility>

#include "trellis/metadata.hpp"
#include "trellis/result.hpp"

namespace trellis {
namespace {

TEST(StatusTest, DefaultIsOk) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.to_string(), "OK");
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
    EXPECT_EQ(status_code_name(static_cast<StatusCode>(i)), names[i]);
    StatusCode parsed;
    ASSERT_TRUE(parse_status_code(names[i], &parsed));
    EXPECT_EQ(static_cast<int>(parsed), i);
  }
  EXPECT_EQ(status_code_name(static_cast<StatusCode>(99)), "UNKNOWN_CODE(99)");
  StatusCode parsed;
  EXPECT_FALSE(parse_status_code("NOPE", &parsed));
}

TEST(StatusTest, CarriesMessageAndDetails) {
  Status s(StatusCode::kNotFound, "no such user", std::string("\x01\x00", 2));
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "no such user");
  EXPECT_EQ(s.details().size(), 2u);
  EXPECT_EQ(s.to_string(), "NOT_FOUND: no such user");
  EXPECT_EQ(Status::unavailable("x").code(), StatusCode::kUnavailable);
}

TEST(StatusTest, OkHasEmptyMessageAndDetails) {
  for (const Status& s : {Status(), Status(StatusCode::kOk, ""), Status(StatusCode::kOk, "", "")}) {
    EXPECT_TRUE(s.ok());
    EXPECT_EQ(s.message(), "");
    EXPECT_EQ(s.details(), "");
  }
  // A non-OK status without a message reads as empty too.
  EXPECT_EQ(Status::internal("").message(), "");
  EXPECT_EQ(Status::internal("").details(), "");
}

TEST(StatusTest, OkStatusesCompareEqual) {
  EXPECT_EQ(Status(), Status(StatusCode::kOk, ""));
  EXPECT_FALSE(Status() != Status(StatusCode::kOk, ""));
  EXPECT_NE(Status(), Status::cancelled(""));
  // An OK code with a message is a different Status: equality compares all three parts.
  EXPECT_NE(Status(), Status(StatusCode::kOk, "note"));
  EXPECT_NE(Status(), Status(StatusCode::kOk, "", "d"));
}

TEST(StatusTest, EqualityComparesCodeMessageAndDetails) {
  Status s(StatusCode::kNotFound, "gone", "d");
  EXPECT_EQ(s, Status(StatusCode::kNotFound, "gone", "d"));
  EXPECT_NE(s, Status(StatusCode::kAborted, "gone", "d"));
  EXPECT_NE(s, Status(StatusCode::kNotFound, "other", "d"));
  EXPECT_NE(s, Status(StatusCode::kNotFound, "gone", "e"));
  EXPECT_NE(s, Status(StatusCode::kNotFound, "gone"));
  EXPECT_NE(s, Status(StatusCode::kNotFound, "", "d"));
}

TEST(StatusTest, CopyOfErrorIsEqualAndIndependent) {
  auto original = std::make_unique<Status>(StatusCode::kNotFound, "no such user", "details");
  Status copy(*original);
  EXPECT_EQ(copy, *original);
  EXPECT_NE(&copy.message(), &original->message());  // its own strings, not shared ones

  Status assigned = Status::unavailable("replaced");
  assigned = *original;
  EXPECT_EQ(assigned, *original);

  // The copies outlive the original and are unchanged by its end.
  original.reset();
  EXPECT_EQ(copy.code(), StatusCode::kNotFound);
  EXPECT_EQ(copy.message(), "no such user");
  EXPECT_EQ(copy.details(), "details");
  EXPECT_EQ(assigned, copy);

  // Copy-assigning an OK status drops the message; self-assignment keeps it.
  Status& self = copy;
  copy = self;
  EXPECT_EQ(copy.message(), "no such user");
  copy = Status();
  EXPECT_TRUE(copy.ok());
  EXPECT_EQ(copy.message(), "");
  EXPECT_EQ(assigned.message(), "no such user");
}

TEST(StatusTest, MoveLeavesSourceValid) {
  static_assert(std::is_nothrow_move_constructible_v<Status>);
  static_assert(std::is_nothrow_move_assignable_v<Status>);

  Status source = Status::permission_denied("denied");
  Status moved(std::move(source));
  EXPECT_EQ(moved, Status::permission_denied("denied"));
  // Documented moved-from state: the code stays, message and details are empty.
  EXPECT_EQ(source.code(), StatusCode::kPermissionDenied);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(source.message(), "");
  EXPECT_EQ(source.details(), "");
  EXPECT_EQ(source.to_string(), "PERMISSION_DENIED: ");

  // The moved-from Status can be assigned again, and move-assignment replaces a message.
  source = Status::aborted("again");
  EXPECT_EQ(source.message(), "again");
  moved = std::move(source);
  EXPECT_EQ(moved, Status::aborted("again"));
  source = Status();
  EXPECT_TRUE(source.ok());
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
