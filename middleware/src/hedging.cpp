#include "trellis/middleware/hedging.hpp"

#include <algorithm>

namespace trellis {

bool HedgingPolicy::non_fatal(StatusCode code) const {
  return std::find(non_fatal_codes.begin(), non_fatal_codes.end(), code) != non_fatal_codes.end();
}

}  // namespace trellis
