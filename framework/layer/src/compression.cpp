#include "trellis/compression.hpp"

namespace trellis {

std::string_view compression_name(Compression compression) {
  switch (compression) {
    case Compression::kNone:
      return "identity";
    case Compression::kDeflate:
      return "deflate";
    case Compression::kGzip:
      return "gzip";
  }
  return "identity";
}

}  // namespace trellis
