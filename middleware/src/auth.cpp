// The bearer-token checker of the auth layer.
#include "trellis/middleware/auth.hpp"

#include <string>
#include <string_view>
#include <unordered_set>

namespace trellis {

// Looked up by string_view, so checking a call copies nothing.
struct BearerTokenChecker::Tokens {
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
  std::unordered_set<std::string, Hash, std::equal_to<>> set;
};

BearerTokenChecker::BearerTokenChecker(std::vector<std::string> accepted_tokens) {
  auto tokens = std::make_shared<Tokens>();
  for (std::string& token : accepted_tokens) {
    if (!token.empty()) tokens->set.insert(std::move(token));
  }
  tokens_ = std::move(tokens);
}

std::string_view BearerTokenChecker::parse(std::string_view authorization) {
  constexpr std::string_view kScheme = "bearer";
  if (authorization.size() <= kScheme.size() || authorization[kScheme.size()] != ' ') return {};
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    char c = authorization[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != kScheme[i]) return {};
  }
  std::string_view token = authorization.substr(kScheme.size() + 1);
  const auto first = token.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  token = token.substr(first, token.find_last_not_of(" \t") - first + 1);
  // A token is one word (RFC 6750's b64token); "Bearer a b" is malformed.
  if (token.find_first_of(" \t") != std::string_view::npos) return {};
  return token;
}

Status BearerTokenChecker::operator()(const Call& call) const {
  std::optional<std::string_view> header = call.request_metadata().get("authorization");
  if (!header) return Status::unauthenticated("missing authorization metadata");
  std::string_view token = parse(*header);
  if (token.empty()) {
    return Status::unauthenticated("malformed authorization metadata: expected \"Bearer <token>\"");
  }
  if (!tokens_->set.contains(token)) return Status::permission_denied("bearer token not accepted");
  return Status();
}

AuthLayer AuthLayer::bearer(std::vector<std::string> accepted_tokens) {
  return AuthLayer(BearerTokenChecker(std::move(accepted_tokens)));
}

}  // namespace trellis
