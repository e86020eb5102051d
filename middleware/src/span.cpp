// trellis::Span: the RPC attributes of a span, and gRPC peer strings split into address parts.
#include "trellis/middleware/span.hpp"

#include "absl/strings/numbers.h"
#include "trellis/detail/percent_encoding.hpp"

namespace trellis {

std::string_view Span::rpc_service() const {
  std::size_t slash = name.rfind('/');
  return slash == std::string::npos ? std::string_view() : std::string_view(name).substr(0, slash);
}

std::string_view Span::rpc_method() const {
  std::size_t slash = name.rfind('/');
  return slash == std::string::npos ? std::string_view(name)
                                    : std::string_view(name).substr(slash + 1);
}

bool Span::is_error() const {
  if (kind == SpanKind::kClient) return status_code != StatusCode::kOk;
  switch (status_code) {
    case StatusCode::kUnknown:
    case StatusCode::kDeadlineExceeded:
    case StatusCode::kUnimplemented:
    case StatusCode::kInternal:
    case StatusCode::kUnavailable:
    case StatusCode::kDataLoss:
      return true;
    default:
      return false;
  }
}

std::vector<SpanAttribute> Span::attributes() const {
  std::vector<SpanAttribute> out;
  out.reserve(10);
  out.push_back({"rpc.system", std::string("grpc")});
  out.push_back({"rpc.service", std::string(rpc_service())});
  out.push_back({"rpc.method", std::string(rpc_method())});
  out.push_back({"rpc.grpc.status_code", static_cast<std::int64_t>(status_code)});
  if (peer.empty()) return out;
  PeerAddress p = parse_peer(peer);
  if (!p.transport.empty()) out.push_back({"network.transport", std::move(p.transport)});
  if (!p.network_type.empty()) out.push_back({"network.type", std::move(p.network_type)});
  out.push_back({"network.peer.address", p.address});
  if (p.port >= 0) out.push_back({"network.peer.port", static_cast<std::int64_t>(p.port)});
  if (kind == SpanKind::kClient) {
    out.push_back({"server.address", std::move(p.address)});
    if (p.port >= 0) out.push_back({"server.port", static_cast<std::int64_t>(p.port)});
  }
  return out;
}

PeerAddress parse_peer(std::string_view peer) {
  PeerAddress out;
  std::size_t colon = peer.find(':');
  std::string_view scheme = colon == std::string_view::npos ? "" : peer.substr(0, colon);
  if (scheme == "ipv4" || scheme == "ipv6") {
    std::string rest = detail::percent_decode(peer.substr(colon + 1));
    std::string_view r = rest;
    std::string_view host = r;
    std::string_view port;
    if (!r.empty() && r.front() == '[') {
      std::size_t close = r.find(']');
      if (close != std::string_view::npos) {
        host = r.substr(1, close - 1);
        if (close + 1 < r.size() && r[close + 1] == ':') port = r.substr(close + 2);
      }
    } else if (std::size_t last = r.rfind(':'); last != std::string_view::npos) {
      host = r.substr(0, last);
      port = r.substr(last + 1);
    }
    int n = 0;
    if (!port.empty() && absl::SimpleAtoi(absl::string_view(port.data(), port.size()), &n) &&
        n >= 0 && n <= 65535)
      out.port = n;
    out.transport = "tcp";  // gRPC's ipv4 and ipv6 schemes are TCP connections
    out.network_type = std::string(scheme);
    out.address = std::string(host);
  } else if (scheme == "unix" || scheme == "unix-abstract") {
    out.transport = "unix";
    out.address = detail::percent_decode(peer.substr(colon + 1));
  } else {
    out.address = std::string(peer);
  }
  return out;
}

}  // namespace trellis
