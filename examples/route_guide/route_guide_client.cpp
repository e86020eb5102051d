// Calls the four methods of routeguide.RouteGuide in order with the Trellis typed client:
// GetFeature (unary), ListFeatures (reads a stream of responses), RecordRoute (writes a stream of
// requests, then awaits the one response) and RouteChat (one task writes notes while another
// reads the replies, joined with Asio's `&&`). Its requests are fixed, so against
// route_guide_server the output is the same every run. Exits 0 on success; on an error prints the
// call, the status code name and the message to stderr and exits 1.
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "route_guide.trellis.h"
#include "trellis/runtime.hpp"

ABSL_FLAG(std::string, target, "localhost:50051", "server address (any gRPC target string)");
ABSL_FLAG(int, timeout_ms, 10000, "deadline of each call; 0 for none");

namespace {

using namespace boost::asio::experimental::awaitable_operators;
using routeguide::Feature;
using routeguide::Point;
using routeguide::Rectangle;
using routeguide::RouteGuideClient;
using routeguide::RouteNote;
using routeguide::RouteSummary;
using trellis::CallOptions;
using trellis::ClientReader;
using trellis::ClientReaderWriter;
using trellis::ClientWriter;
using trellis::Result;
using trellis::Status;
using trellis::Task;

// Points are degrees * 10^7; these take degrees.
Point MakePoint(double latitude, double longitude) {
  Point p;
  p.set_latitude(static_cast<int>(std::lround(latitude * 1e7)));
  p.set_longitude(static_cast<int>(std::lround(longitude * 1e7)));
  return p;
}

std::string Format(const Point& p) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "(%.4f, %.4f)", p.latitude() / 1e7, p.longitude() / 1e7);
  return buf;
}

RouteNote MakeNote(const Point& location, std::string message) {
  RouteNote note;
  *note.mutable_location() = location;
  note.set_message(std::move(message));
  return note;
}

// Reports a failed call; the return value is the process's exit status.
int Fail(const char* call, const Status& status) {
  std::cerr << call << ": " << trellis::status_code_name(status.code()) << ": " << status.message()
            << "\n";
  return 1;
}

class RouteGuideRunner {
 public:
  RouteGuideRunner(RouteGuideClient client, int timeout_ms)
      : client_(std::move(client)), timeout_ms_(timeout_ms) {}

  Task<int> Run() {
    if (int rc = co_await GetFeature(); rc != 0) co_return rc;
    if (int rc = co_await ListFeatures(); rc != 0) co_return rc;
    if (int rc = co_await RecordRoute(); rc != 0) co_return rc;
    co_return co_await RouteChat();
  }

 private:
  // Each call gets its own deadline, counted from when it starts.
  CallOptions Options() const {
    CallOptions options;
    if (timeout_ms_ > 0) options.set_timeout(std::chrono::milliseconds(timeout_ms_));
    return options;
  }

  // Unary: one request, one Result. The second point is between features: the server answers
  // with an unnamed feature.
  Task<int> GetFeature() {
    for (const Point& point : {MakePoint(40.0, -74.5), MakePoint(40.05, -74.5)}) {
      Result<Feature> feature = co_await client_.GetFeature(point, Options());
      if (!feature.ok()) co_return Fail("GetFeature", feature.status());
      if (feature->name().empty()) {
        std::cout << "GetFeature: no feature at " << Format(feature->location()) << "\n";
      } else {
        std::cout << "GetFeature: " << feature->name() << " at " << Format(feature->location())
                  << "\n";
      }
    }
    co_return 0;
  }

  // Server streaming: read() until std::nullopt, then finish() says whether the stream ended
  // well. The corners are given north-east first; the server accepts either order.
  Task<int> ListFeatures() {
    Rectangle rect;
    *rect.mutable_lo() = MakePoint(40.15, -74.15);
    *rect.mutable_hi() = MakePoint(40.0, -74.45);
    ClientReader<Feature> features = client_.ListFeatures(rect, Options());
    int count = 0;
    while (std::optional<Feature> feature = co_await features.read()) {
      std::cout << "ListFeatures: " << feature->name() << " at " << Format(feature->location())
                << "\n";
      ++count;
    }
    if (Status status = co_await features.finish(); !status.ok()) {
      co_return Fail("ListFeatures", status);
    }
    std::cout << "ListFeatures: " << count << " features\n";
    co_return 0;
  }

  // Client streaming: one write per point of the route (each completes when gRPC has taken the
  // message), then finish() half-closes and completes with the server's summary. Four of the
  // six points are features. The elapsed time is left out of the output: it depends on timing.
  Task<int> RecordRoute() {
    const std::vector<Point> route = {MakePoint(40.0, -74.5),  MakePoint(40.05, -74.5),
                                      MakePoint(40.0, -74.4),  MakePoint(40.1, -74.4),
                                      MakePoint(40.1, -74.35), MakePoint(40.1, -74.3)};
    ClientWriter<Point, RouteSummary> recorder = client_.RecordRoute(Options());
    for (const Point& point : route) {
      if (!co_await recorder.write(point)) break;  // the call ended; finish() says why
    }
    Result<RouteSummary> summary = co_await recorder.finish();
    if (!summary.ok()) co_return Fail("RecordRoute", summary.status());
    std::cout << "RecordRoute: point_count=" << summary->point_count()
              << " feature_count=" << summary->feature_count()
              << " distance=" << summary->distance() << "\n";
    co_return 0;
  }

  // Bidi streaming: SendNotes and ReceiveNotes run at the same time on the same stream, and
  // `a && b` completes when both have. Five notes at two places: the server answers the third
  // with the first, the fourth with the second and the fifth with the first and the third.
  Task<int> RouteChat() {
    const Point a = MakePoint(40.0, -74.5);
    const Point b = MakePoint(40.0, -74.4);
    const std::vector<RouteNote> notes = {
        MakeNote(a, "First message"), MakeNote(b, "Second message"), MakeNote(a, "Third message"),
        MakeNote(b, "Fourth message"), MakeNote(a, "Fifth message")};
    ClientReaderWriter<RouteNote, RouteNote> chat = client_.RouteChat(Options());
    int received = co_await (SendNotes(chat, notes) && ReceiveNotes(chat));
    if (Status status = co_await chat.finish(); !status.ok()) co_return Fail("RouteChat", status);
    std::cout << "RouteChat: received " << received << " notes\n";
    co_return 0;
  }

  static Task<void> SendNotes(ClientReaderWriter<RouteNote, RouteNote>& chat,
                              const std::vector<RouteNote>& notes) {
    for (const RouteNote& note : notes) {
      if (!co_await chat.write(note)) co_return;  // the call ended; finish() says why
    }
    co_await chat.writes_done();  // no more notes; the replies keep coming
  }

  static Task<int> ReceiveNotes(ClientReaderWriter<RouteNote, RouteNote>& chat) {
    int received = 0;
    while (std::optional<RouteNote> note = co_await chat.read()) {
      std::cout << "RouteChat: \"" << note->message() << "\" at " << Format(note->location())
                << "\n";
      ++received;
    }
    co_return received;
  }

  RouteGuideClient client_;
  int timeout_ms_;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto runtime = trellis::Runtime::single_thread().build();
  RouteGuideRunner runner(RouteGuideClient(trellis::Channel::insecure(absl::GetFlag(FLAGS_target))),
                          absl::GetFlag(FLAGS_timeout_ms));
  return runtime->block_on(runner.Run());
}
