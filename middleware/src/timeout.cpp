// placeholder: filled in by the timeout work
namespace trellis {}
