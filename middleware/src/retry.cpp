// placeholder: filled in by the retry work
namespace trellis {}
