// placeholder: filled in by the metrics_http work
namespace trellis {}
