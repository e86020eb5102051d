// placeholder: filled in by the limits work
namespace trellis {}
