// The route guide served by Trellis: one handler of each call kind. GetFeature is unary,
// ListFeatures writes a stream of responses, RecordRoute reads a stream of requests and answers
// once, RouteChat reads and writes one stream. The features are a fixed, generated map (a dozen
// named points on a grid), so every run answers the same. Serves until SIGINT or SIGTERM, then
// shuts down gracefully.
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <numbers>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "route_guide.trellis.h"
#include "trellis/runtime.hpp"
#include "trellis/server.hpp"
#include "trellis/shutdown_signals.hpp"

ABSL_FLAG(int, port, 50051, "port to listen on; 0 picks a free one");
ABSL_FLAG(std::string, host, "0.0.0.0", "address to listen on");
ABSL_FLAG(int, threads, 0, "runtime worker threads; 0 means one per hardware thread");
ABSL_FLAG(int, grace_ms, 5000, "how long in-flight calls may take to finish at shutdown");

namespace {

using routeguide::Feature;
using routeguide::Point;
using routeguide::Rectangle;
using routeguide::RouteNote;
using routeguide::RouteSummary;
using trellis::Result;
using trellis::ServerContext;
using trellis::ServerReader;
using trellis::ServerWriter;
using trellis::Status;
using trellis::Task;

constexpr double kCoordFactor = 1e7;  // Point coordinates are degrees * 10^7

Point MakePoint(int latitude, int longitude) {
  Point p;
  p.set_latitude(latitude);
  p.set_longitude(longitude);
  return p;
}

// Twelve features on a 3 x 4 grid, 0.1 degree apart: latitudes 40.0 to 40.2 (south to north),
// longitudes -74.5 to -74.2 (west to east), named in row-major order.
std::vector<Feature> MakeFeatures() {
  static constexpr std::array<const char*, 12> kNames = {
      "Alder Hill", "Birch Ford",  "Cedar Crossing", "Dogwood Bend",
      "Elm Quarry", "Fir Lookout", "Ginkgo Green",   "Hazel Mill",
      "Ivy Bridge", "Juniper Gap", "Larch Landing",  "Maple Summit"};
  std::vector<Feature> features;
  for (int i = 0; i < static_cast<int>(kNames.size()); ++i) {
    Feature f;
    f.set_name(kNames[i]);
    *f.mutable_location() =
        MakePoint(400'000'000 + (i / 4) * 1'000'000, -745'000'000 + (i % 4) * 1'000'000);
    features.push_back(std::move(f));
  }
  return features;
}

bool SameLocation(const Point& a, const Point& b) {
  return a.latitude() == b.latitude() && a.longitude() == b.longitude();
}

// Great-circle distance in metres (haversine formula, mean Earth radius).
double DistanceMetres(const Point& from, const Point& to) {
  constexpr double kEarthRadius = 6'371'000;
  constexpr double kRadians = std::numbers::pi / 180 / kCoordFactor;
  double lat1 = from.latitude() * kRadians;
  double lat2 = to.latitude() * kRadians;
  double dlat = lat2 - lat1;
  double dlon = (to.longitude() - from.longitude()) * kRadians;
  double a = std::sin(dlat / 2) * std::sin(dlat / 2) +
             std::cos(lat1) * std::cos(lat2) * std::sin(dlon / 2) * std::sin(dlon / 2);
  return kEarthRadius * 2 * std::atan2(std::sqrt(a), std::sqrt(1 - a));
}

class RouteGuideImpl final : public routeguide::RouteGuideService {
 public:
  // The feature map is built once and never changes, so the handlers, which run on any worker
  // of the runtime, read it without locking.
  RouteGuideImpl() : features_(MakeFeatures()) {}

  // Unary: like the gRPC convention for this service, an unknown point is not an error but a
  // feature without a name.
  Task<Result<Feature>> GetFeature(ServerContext&, const Point& point) override {
    Feature feature;
    if (const Feature* found = FeatureAt(point)) feature = *found;
    *feature.mutable_location() = point;
    co_return feature;
  }

  // Server streaming: one write per feature in the rectangle. A write completes when gRPC has
  // taken the message (that is the flow control); false means the client is gone.
  Task<Status> ListFeatures(ServerContext&, const Rectangle& rect,
                            ServerWriter<Feature>& writer) override {
    int lat_lo = std::min(rect.lo().latitude(), rect.hi().latitude());
    int lat_hi = std::max(rect.lo().latitude(), rect.hi().latitude());
    int lon_lo = std::min(rect.lo().longitude(), rect.hi().longitude());
    int lon_hi = std::max(rect.lo().longitude(), rect.hi().longitude());
    for (const Feature& f : features_) {
      const Point& p = f.location();
      if (p.latitude() < lat_lo || p.latitude() > lat_hi || p.longitude() < lon_lo ||
          p.longitude() > lon_hi) {
        continue;
      }
      if (!co_await writer.write(f)) co_return Status::cancelled("the client went away");
    }
    co_return Status();
  }

  // Client streaming: read() until std::nullopt (the client half-closed), then the one response.
  Task<Result<RouteSummary>> RecordRoute(ServerContext& ctx, ServerReader<Point>& reader) override {
    RouteSummary summary;
    double distance = 0;
    std::optional<Point> previous;
    auto start = std::chrono::steady_clock::now();
    while (std::optional<Point> point = co_await reader.read()) {
      summary.set_point_count(summary.point_count() + 1);
      if (FeatureAt(*point) != nullptr) summary.set_feature_count(summary.feature_count() + 1);
      if (previous) distance += DistanceMetres(*previous, *point);
      previous = std::move(point);
    }
    // read() also ends with std::nullopt when the call was cancelled or its deadline passed.
    if (ctx.is_cancelled()) co_return Status::cancelled("the route was not completed");
    summary.set_distance(static_cast<int>(std::lround(distance)));
    summary.set_elapsed_time(static_cast<int>(
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - start)
            .count()));
    co_return summary;
  }

  // Bidi streaming: for each note read, first send back the notes received earlier in this call
  // at the same location, then remember it. The notes live in the call's coroutine frame, so
  // concurrent chats do not see each other's notes and every run gives the same replies.
  Task<Status> RouteChat(ServerContext&, ServerReader<RouteNote>& reader,
                         ServerWriter<RouteNote>& writer) override {
    std::map<std::pair<int, int>, std::vector<RouteNote>> notes;
    while (std::optional<RouteNote> note = co_await reader.read()) {
      auto& here = notes[{note->location().latitude(), note->location().longitude()}];
      for (const RouteNote& earlier : here) {
        if (!co_await writer.write(earlier)) co_return Status::cancelled("the client went away");
      }
      here.push_back(std::move(*note));
    }
    co_return Status();
  }

 private:
  const Feature* FeatureAt(const Point& point) const {
    for (const Feature& f : features_) {
      if (SameLocation(f.location(), point)) return &f;
    }
    return nullptr;
  }

  const std::vector<Feature> features_;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // From before the server listens: a SIGTERM that comes early drains the server too.
  trellis::ShutdownSignals signals;
  auto runtime = trellis::Runtime::multi_thread()
                     .worker_threads(static_cast<std::size_t>(absl::GetFlag(FLAGS_threads)))
                     .build();
  RouteGuideImpl service;
  auto server = trellis::Server::Builder(*runtime)
                    .add_insecure_port(absl::GetFlag(FLAGS_host) + ":" +
                                       std::to_string(absl::GetFlag(FLAGS_port)))
                    .add_service(service)
                    .build();
  if (!server.ok()) {
    std::cerr << "route_guide_server: " << server.status() << "\n";
    return 1;
  }
  std::printf("route_guide_server listening on port %d\n", (*server)->port());
  std::fflush(stdout);

  int signo = signals.wait();
  std::fprintf(stderr, "route_guide_server: signal %d, draining in-flight calls\n", signo);
  (*server)->shutdown(std::chrono::milliseconds(absl::GetFlag(FLAGS_grace_ms)));
  server.value().reset();  // servers go before their runtime
  runtime->shutdown();
  return 0;
}
