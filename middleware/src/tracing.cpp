// placeholder: filled in by the tracing work
namespace trellis {}
