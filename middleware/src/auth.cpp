// placeholder: filled in by the auth work
namespace trellis {}
