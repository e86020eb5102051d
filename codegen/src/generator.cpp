#include "generator.hpp"

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/io/zero_copy_stream.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "names.hpp"

namespace trellis::codegen {

namespace pb = google::protobuf;

namespace {

constexpr const char* kPluginName = "protoc-gen-trellis";
// The generated code follows the project's .clang-format: Google style, 100 columns.
constexpr size_t kColumns = 100;

struct Options {
  bool skip_streaming = false;
};

bool ParseOptions(const std::string& parameter, Options* options, std::string* error) {
  size_t start = 0;
  while (start <= parameter.size()) {
    size_t end = parameter.find(',', start);
    if (end == std::string::npos) end = parameter.size();
    std::string option = parameter.substr(start, end - start);
    if (option == "skip_streaming") {
      options->skip_streaming = true;
    } else if (!option.empty()) {
      *error = std::string(kPluginName) + ": unknown option \"" + option +
               "\" (known options: skip_streaming)";
      return false;
    }
    start = end + 1;
  }
  return true;
}

// "client-streaming", "server-streaming", "bidi-streaming", or nullptr for a unary method.
const char* StreamingKind(const pb::MethodDescriptor* method) {
  if (method->client_streaming() && method->server_streaming()) return "bidi-streaming";
  if (method->client_streaming()) return "client-streaming";
  if (method->server_streaming()) return "server-streaming";
  return nullptr;
}

// What the generated code of a method looks like, by its kind.
struct MethodShape {
  const char* add_method;       // the trellis::Service member that registers the handler
  const char* client_method;    // the trellis class a client holds for the method
  const char* server_contract;  // comment on the handler, after the rpc line ("" for unary)
  const char* client_contract;  // comment on the client member function ("" for unary)
};

MethodShape ShapeOf(const pb::MethodDescriptor* method) {
  if (method->client_streaming() && method->server_streaming()) {
    return {"add_bidi_streaming_method", "BidiStreamingClientMethod",
            "Bidi-streaming: read() from `reader`, write() to `writer`; the returned status ends "
            "the call.",
            "Bidi-streaming: write() requests, read() responses, in any order; then finish() for "
            "the status."};
  }
  if (method->client_streaming()) {
    return {"add_client_streaming_method", "ClientStreamingClientMethod",
            "Client-streaming: read() the requests from `reader` until std::nullopt; return the "
            "response.",
            "Client-streaming: write() the requests, then finish() for the response or the error "
            "status."};
  }
  if (method->server_streaming()) {
    return {"add_server_streaming_method", "ServerStreamingClientMethod",
            "Server-streaming: write() the responses to `writer`; the returned status ends the "
            "call.",
            "Server-streaming: read() the responses until std::nullopt, then finish() for the "
            "call's status."};
  }
  return {"add_unary_method", "UnaryClientMethod", "", ""};
}

// The method's `idempotency_level` option as a trellis::Idempotency argument, or nullptr for the
// default (IDEMPOTENCY_UNKNOWN), which the generated code leaves out.
const char* IdempotencyArgument(const pb::MethodDescriptor* method) {
  switch (method->options().idempotency_level()) {
    case pb::MethodOptions::NO_SIDE_EFFECTS:
      return "::trellis::Idempotency::kNoSideEffects";
    case pb::MethodOptions::IDEMPOTENT:
      return "::trellis::Idempotency::kIdempotent";
    default:
      return nullptr;
  }
}

// "rpc SayHello(HelloRequest) returns (HelloReply)", as the proto file would declare it.
std::string RpcSignature(const pb::MethodDescriptor* method) {
  const pb::FileDescriptor* file = method->file();
  return "rpc " + method->name() + "(" + (method->client_streaming() ? "stream " : "") +
         ProtoTypeName(method->input_type(), file) + ") returns (" +
         (method->server_streaming() ? "stream " : "") +
         ProtoTypeName(method->output_type(), file) + ")";
}

std::string TrimRight(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.pop_back();
  return s;
}

// Appends `text` as "// " comment lines indented by `indent`, word-wrapped at kColumns.
void AppendComment(std::string* out, size_t indent, const std::string& text) {
  const std::string prefix = std::string(indent, ' ') + "//";
  std::string line = prefix;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(' ', start);
    if (end == std::string::npos) end = text.size();
    std::string word = text.substr(start, end - start);
    start = end + 1;
    if (word.empty()) continue;
    if (line != prefix && line.size() + 1 + word.size() > kColumns) {
      *out += line + "\n";
      line = prefix;
    }
    line += " " + word;
  }
  *out += line + "\n";
}

// Appends the leading comment of a proto element verbatim (one "//" line per comment line,
// surrounding blank lines dropped).
template <class DescriptorT>
void AppendProtoComment(std::string* out, size_t indent, const DescriptorT* descriptor) {
  pb::SourceLocation location;
  if (!descriptor->GetSourceLocation(&location)) return;
  std::vector<std::string> lines;
  const std::string& text = location.leading_comments;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.push_back(TrimRight(text.substr(start, end - start)));
    start = end + 1;
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  size_t first = 0;
  while (first < lines.size() && lines[first].empty()) ++first;
  for (size_t i = first; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    const char* space = !line.empty() && line.front() != ' ' ? " " : "";
    // A comment line ending in a backslash would continue onto the next line of code.
    const char* tail = !line.empty() && line.back() == '\\' ? " (backslash)" : "";
    out->append(indent, ' ').append("//").append(space).append(line).append(tail).append("\n");
  }
}

// Greedily packs `pieces` into lines: the first starts with `first` (already indented), later
// ones with `continuation` spaces. Fails (returns empty) if a line would exceed kColumns.
std::vector<std::string> Pack(const std::string& first, size_t continuation,
                              const std::vector<std::string>& pieces) {
  std::vector<std::string> lines;
  std::string line = first;
  bool line_empty = true;
  for (const std::string& piece : pieces) {
    if (!line_empty && line.size() + 1 + piece.size() > kColumns) {
      lines.push_back(line);
      line = std::string(continuation, ' ');
      line_empty = true;
    }
    line += (line_empty ? "" : " ") + piece;
    line_empty = false;
    if (line.size() > kColumns) return {};
  }
  lines.push_back(line);
  return lines;
}

// Appends `head` `args...` `tail` (head ends with the opening parenthesis or bracket, tail
// starts with the closing one) laid out like clang-format does it: on one line if it fits,
// else packed and aligned after the parenthesis, else packed after a break behind it, whichever
// takes fewer lines.
void AppendWrapped(std::string* out, size_t indent, const std::string& head,
                   const std::vector<std::string>& args, const std::string& tail) {
  std::string one_line = std::string(indent, ' ') + head;
  for (size_t i = 0; i < args.size(); ++i) one_line += (i == 0 ? "" : ", ") + args[i];
  one_line += tail;
  if (one_line.size() <= kColumns || args.empty()) {
    *out += one_line + "\n";
    return;
  }
  std::vector<std::string> pieces;
  for (size_t i = 0; i < args.size(); ++i) {
    pieces.push_back(args[i] + (i + 1 == args.size() ? tail : ","));
  }
  const std::string head_line = std::string(indent, ' ') + head;
  std::vector<std::string> aligned = Pack(head_line, head_line.size(), pieces);
  std::vector<std::string> broken;
  if (head_line.size() <= kColumns) {
    broken = Pack(std::string(indent + 4, ' '), indent + 4, pieces);
    if (!broken.empty()) broken.insert(broken.begin(), head_line);
  }
  std::vector<std::string> lines = aligned;
  if (lines.empty() || (!broken.empty() && broken.size() < lines.size())) lines = broken;
  if (lines.empty()) {
    // Nothing fits: one argument per line, an argument too long even so broken after the
    // opening bracket of its template type ("Template<" / "Type>& name") and, if still too
    // long, before its last word ("const Type&" / "request) = 0;").
    lines.push_back(head_line);
    const std::string arg_indent(indent + 4, ' ');
    const std::string continuation(indent + 8, ' ');
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (arg_indent.size() + pieces[i].size() <= kColumns) {
        lines.push_back(arg_indent + pieces[i]);
        continue;
      }
      std::string first_indent = arg_indent;
      size_t start = 0;
      if (size_t angle = args[i].find('<'); angle != std::string::npos) {
        lines.push_back(arg_indent + pieces[i].substr(0, angle + 1));
        first_indent = continuation;
        start = angle + 1;
      }
      size_t space = args[i].rfind(' ');
      if (first_indent.size() + pieces[i].size() - start <= kColumns ||
          space == std::string::npos || space < start) {
        lines.push_back(first_indent + pieces[i].substr(start));
      } else {
        lines.push_back(first_indent + pieces[i].substr(start, space - start));
        lines.push_back(continuation + pieces[i].substr(space + 1));
      }
    }
  }
  for (const std::string& line : lines) *out += line + "\n";
}

// A C++ template type as generated code spells it, `open``args...``close`, for example
// {"::trellis::ClientWriter<", {request, response}, ">"}: the parts show where it may be broken.
struct TypeName {
  std::string open;
  std::vector<std::string> args;
  std::string close;

  std::string Text() const {
    std::string text = open;
    for (size_t i = 0; i < args.size(); ++i) text += (i == 0 ? "" : ", ") + args[i];
    return text + close;
  }
};

constexpr const char* kTaskOfResult = "::trellis::Task<::trellis::Result<";

// ::trellis::Task<::trellis::Result<`response`>>, the result of unary calls and handlers.
TypeName TaskOfResult(const std::string& response) { return {kTaskOfResult, {response}, ">>"}; }

// Appends the declaration `prefix``result` `name`(`params`)`tail` of a generated member
// function. When even "result name(" does not fit on a line, the result type gets lines of its
// own.
void AppendFunction(std::string* out, const std::string& prefix, const TypeName& result,
                    const std::string& name, const std::vector<std::string>& params,
                    const std::string& tail) {
  const size_t indent = 2;
  const std::string text = result.Text();
  const std::string head = prefix + text + " " + name + "(";
  if (indent + head.size() <= kColumns) {
    AppendWrapped(out, indent, head, params, tail);
    return;
  }
  if (indent + prefix.size() + text.size() <= kColumns) {
    *out += std::string(indent, ' ') + prefix + text + "\n";
  } else if (result.open == kTaskOfResult && result.args.size() == 1) {
    const std::string& response = result.args[0];
    const std::string inner = "::trellis::Result<" + response + ">>";
    if (indent + 4 + inner.size() <= kColumns) {
      *out += std::string(indent, ' ') + prefix + "::trellis::Task<\n";
      *out += std::string(indent + 4, ' ') + inner + "\n";
    } else {
      *out += std::string(indent, ' ') + prefix + kTaskOfResult + "\n";
      *out += std::string(indent + 4, ' ') + response + ">>\n";
    }
  } else {
    AppendWrapped(out, indent, prefix + result.open, result.args, result.close);
  }
  AppendWrapped(out, indent, name + "(", params, tail);
}

// Namespace-scope C++ names that protoc's C++ and gRPC generators declare in the package of
// `file` (as far as the file and its imports show), each with a description for errors.
void CollectPackageNames(const pb::FileDescriptor* file, const std::string& package,
                         std::set<const pb::FileDescriptor*>* seen,
                         std::map<std::string, std::string>* names) {
  if (!seen->insert(file).second) return;
  for (int i = 0; i < file->dependency_count(); ++i) {
    CollectPackageNames(file->dependency(i), package, seen, names);
  }
  if (file->package() != package) return;

  auto add = [&](const std::string& cpp_name, const std::string& what,
                 const std::string& full_name) {
    std::string description = what + " " + full_name;
    if (full_name.substr(full_name.rfind('.') + 1) != cpp_name) {
      description += " (C++ " + cpp_name + ")";
    }
    names->emplace(cpp_name, description);
  };
  auto add_enum = [&](const pb::EnumDescriptor* enum_type) {
    add(CppClassName(enum_type), "enum", enum_type->full_name());
    for (int i = 0; i < enum_type->value_count(); ++i) {
      add(CppEnumValueName(enum_type->value(i)), "enum value", enum_type->value(i)->full_name());
    }
  };
  auto add_message = [&](auto& self, const pb::Descriptor* message) -> void {
    add(CppClassName(message), "message", message->full_name());
    for (int i = 0; i < message->nested_type_count(); ++i) self(self, message->nested_type(i));
    for (int i = 0; i < message->enum_type_count(); ++i) add_enum(message->enum_type(i));
  };
  for (int i = 0; i < file->message_type_count(); ++i)
    add_message(add_message, file->message_type(i));
  for (int i = 0; i < file->enum_type_count(); ++i) add_enum(file->enum_type(i));
  for (int i = 0; i < file->service_count(); ++i) {
    add(file->service(i)->name(), "service", file->service(i)->full_name());
  }
}

// Rejects names that would collide in C++ (methods left out by skip_streaming do not count).
bool Check(const pb::FileDescriptor* file, const Options& options, std::string* error) {
  const std::string plugin = std::string(kPluginName) + ": ";
  std::set<const pb::FileDescriptor*> seen;
  std::map<std::string, std::string> package_names;
  CollectPackageNames(file, file->package(), &seen, &package_names);

  for (int s = 0; s < file->service_count(); ++s) {
    const pb::ServiceDescriptor* service = file->service(s);
    for (const std::string& cls : {ServiceClassName(service), ClientClassName(service)}) {
      auto it = package_names.find(cls);
      if (it != package_names.end()) {
        *error = plugin + "the class " + cls + " that Trellis generates for service " +
                 service->full_name() + " collides with " + it->second +
                 " in the same C++ namespace; rename one of them";
        return false;
      }
    }
    // Names a method's member functions must not take, per generated class.
    std::map<std::string, std::string> reserved = {
        {ServiceClassName(service), "the name of class " + ServiceClassName(service)},
        {ClientClassName(service), "the name of class " + ClientClassName(service)},
        {"name", "trellis::Service::name()"},
        {"add_unary_method", "trellis::Service::add_unary_method()"},
        {"add_server_streaming_method", "trellis::Service::add_server_streaming_method()"},
        {"add_client_streaming_method", "trellis::Service::add_client_streaming_method()"},
        {"add_bidi_streaming_method", "trellis::Service::add_bidi_streaming_method()"},
        {"methods_", "the member " + ClientClassName(service) + "::methods_"},
    };
    for (int m = 0; m < service->method_count(); ++m) {
      const pb::MethodDescriptor* method = service->method(m);
      if (options.skip_streaming && StreamingKind(method) != nullptr) continue;
      const std::string name = CppMethodName(method);
      auto [it, inserted] = reserved.emplace(name, "method " + method->full_name());
      if (!inserted) {
        *error = plugin + "method " + method->full_name() + " would be the C++ member function " +
                 name + ", which collides with " + it->second + "; rename the method";
        return false;
      }
    }
  }
  return true;
}

// A file without a package generates into the global namespace.
void OpenNamespace(std::string* out, const pb::FileDescriptor* file) {
  if (!file->package().empty()) *out += "namespace " + CppNamespace(file) + " {\n\n";
}

void CloseNamespace(std::string* out, const pb::FileDescriptor* file) {
  if (!file->package().empty()) *out += "\n}  // namespace " + CppNamespace(file) + "\n";
}

// The methods Trellis generates code for, in declaration order: all of them, or only the unary
// ones with skip_streaming.
std::vector<const pb::MethodDescriptor*> GeneratedMethods(const pb::ServiceDescriptor* service,
                                                          const Options& options) {
  std::vector<const pb::MethodDescriptor*> methods;
  for (int m = 0; m < service->method_count(); ++m) {
    const pb::MethodDescriptor* method = service->method(m);
    if (!options.skip_streaming || StreamingKind(method) == nullptr) methods.push_back(method);
  }
  return methods;
}

// The comment above a generated member function: the rpc line, for a streaming method its
// contract (`contract`), and the proto's comment.
void AppendMethodComment(std::string* out, const pb::MethodDescriptor* method,
                         const std::string& contract) {
  AppendComment(out, 2, RpcSignature(method));
  if (!contract.empty()) AppendComment(out, 2, contract);
  AppendProtoComment(out, 2, method);
}

// The streaming methods left out by skip_streaming, as comments.
void AppendSkippedMethods(std::string* out, const pb::ServiceDescriptor* service,
                          const Options& options) {
  if (!options.skip_streaming) return;
  for (int m = 0; m < service->method_count(); ++m) {
    const pb::MethodDescriptor* method = service->method(m);
    if (const char* kind = StreamingKind(method); kind != nullptr) {
      *out += "\n";
      AppendComment(
          out, 2,
          RpcSignature(method) + ": a " + kind + " method, not generated (skip_streaming).");
    }
  }
}

void AppendServiceClass(std::string* out, const pb::ServiceDescriptor* service,
                        const Options& options) {
  const std::string cls = ServiceClassName(service);
  AppendComment(out, 0,
                "Server side of " + service->full_name() +
                    ": derive, implement every method, add to a trellis::Server.");
  AppendProtoComment(out, 0, service);
  std::string line = "class " + cls + " : public ::trellis::Service {";
  if (line.size() <= kColumns) {
    *out += line + "\n";
  } else {
    *out += "class " + cls + "\n    : public ::trellis::Service {\n";
  }
  *out += " public:\n";
  *out += "  " + cls + "();\n";
  for (const pb::MethodDescriptor* method : GeneratedMethods(service, options)) {
    const std::string request = CppMessageType(method->input_type());
    const std::string response = CppMessageType(method->output_type());
    const std::string context = "::trellis::ServerContext& context";
    const std::string reader = "::trellis::ServerReader<" + request + ">& reader";
    const std::string writer = "::trellis::ServerWriter<" + response + ">& writer";
    const TypeName status = {"::trellis::Task<", {"::trellis::Status"}, ">"};
    TypeName result = TaskOfResult(response);
    std::vector<std::string> params = {context, "const " + request + "& request"};
    if (method->client_streaming() && method->server_streaming()) {
      result = status;
      params = {context, reader, writer};
    } else if (method->client_streaming()) {
      params = {context, reader};
    } else if (method->server_streaming()) {
      result = status;
      params.push_back(writer);
    }
    *out += "\n";
    AppendMethodComment(out, method, ShapeOf(method).server_contract);
    AppendFunction(out, "virtual ", result, CppMethodName(method), params, ") = 0;");
  }
  AppendSkippedMethods(out, service, options);
  *out += "};\n";
}

void AppendClientClass(std::string* out, const pb::ServiceDescriptor* service,
                       const Options& options) {
  const std::string cls = ClientClassName(service);
  const std::vector<const pb::MethodDescriptor*> methods = GeneratedMethods(service, options);
  AppendComment(out, 0, "Client side of " + service->full_name() + ".");
  AppendProtoComment(out, 0, service);
  *out += "class " + cls + " {\n";
  *out += " public:\n";
  AppendWrapped(out, 2, "explicit " + cls + "(", {"const ::trellis::Channel& channel"}, ");");
  for (const pb::MethodDescriptor* method : methods) {
    const std::string name = CppMethodName(method);
    const std::string request = CppMessageType(method->input_type());
    const std::string response = CppMessageType(method->output_type());
    // Unary calls are coroutines; streaming ones return the stream, which starts the call.
    TypeName result = TaskOfResult(response);
    if (method->client_streaming() && method->server_streaming()) {
      result = {"::trellis::ClientReaderWriter<", {request, response}, ">"};
    } else if (method->client_streaming()) {
      result = {"::trellis::ClientWriter<", {request, response}, ">"};
    } else if (method->server_streaming()) {
      result = {"::trellis::ClientReader<", {response}, ">"};
    }
    std::vector<std::string> params = {"::trellis::CallOptions options = {}"};
    std::vector<std::string> args = {"std::move(options)"};
    if (!method->client_streaming()) {
      params.insert(params.begin(), "const " + request + "& request");
      args.insert(args.begin(), "request");
    }
    *out += "\n";
    AppendMethodComment(out, method, ShapeOf(method).client_contract);
    AppendFunction(out, "", result, name, params, ") const {");
    AppendWrapped(out, 4, "return methods_." + name + "(", args, ");");
    *out += "  }\n";
    if (!method->client_streaming() && !method->server_streaming()) {
      // The same call for any Asio completion token, as every Trellis operation takes one.
      *out += "  template <class CompletionToken>\n";
      AppendWrapped(out, 2, "auto " + name + "(",
                    {"const " + request + "& request", "::trellis::CallOptions options",
                     "CompletionToken&& token"},
                    ") const {");
      AppendWrapped(out, 4, "return methods_." + name + "(",
                    {"request", "std::move(options)", "std::forward<CompletionToken>(token)"},
                    ");");
      *out += "  }\n";
    }
  }
  AppendSkippedMethods(out, service, options);
  if (!methods.empty()) {
    *out += "\n private:\n";
    *out += "  struct {\n";
    for (const pb::MethodDescriptor* method : methods) {
      const std::string holder = std::string("::trellis::") + ShapeOf(method).client_method + "<";
      const std::vector<std::string> types = {CppMessageType(method->input_type()),
                                              CppMessageType(method->output_type())};
      std::string line =
          "    " + TypeName{holder, types, ">"}.Text() + " " + CppMethodName(method) + ";";
      if (line.size() <= kColumns) {
        *out += line + "\n";
      } else {
        AppendWrapped(out, 4, holder, types, ">");
        *out += "        " + CppMethodName(method) + ";\n";
      }
    }
    *out += "  } methods_;\n";
  }
  *out += "};\n";
}

std::string GenerateHeader(const pb::FileDescriptor* file, const Options& options) {
  std::string out;
  AppendComment(
      &out, 0,
      "Generated by " + std::string(kPluginName) + " from " + file->name() + ". DO NOT EDIT.");
  if (file->service_count() == 0) {
    AppendComment(&out, 0, file->name() + " declares no services.");
    out += "#pragma once\n\n";
    out += "#include \"" + PbHeaderName(file) + "\"\n";
    return out;
  }
  // The file's own .pb.h includes those of its imports; the explicit includes of the files
  // that define request and response types only keep the header self-evidently complete.
  std::set<std::string> pb_headers = {PbHeaderName(file)};
  bool streaming = false;
  for (int s = 0; s < file->service_count(); ++s) {
    for (const pb::MethodDescriptor* method : GeneratedMethods(file->service(s), options)) {
      pb_headers.insert(PbHeaderName(method->input_type()->file()));
      pb_headers.insert(PbHeaderName(method->output_type()->file()));
      streaming |= StreamingKind(method) != nullptr;
    }
  }
  out += "#pragma once\n\n";
  out += "#include <trellis/client.hpp>\n";
  if (streaming) out += "#include <trellis/client_stream.hpp>\n";
  out += "#include <trellis/service.hpp>\n";
  out += "#include <utility>\n\n";
  for (const std::string& header : pb_headers) out += "#include \"" + header + "\"\n";
  out += "\n";
  OpenNamespace(&out, file);
  for (int s = 0; s < file->service_count(); ++s) {
    if (s > 0) out += "\n";
    AppendServiceClass(&out, file->service(s), options);
    out += "\n";
    AppendClientClass(&out, file->service(s), options);
  }
  CloseNamespace(&out, file);
  return out;
}

std::string GenerateSource(const pb::FileDescriptor* file, const Options& options) {
  std::string out;
  AppendComment(
      &out, 0,
      "Generated by " + std::string(kPluginName) + " from " + file->name() + ". DO NOT EDIT.");
  if (file->service_count() == 0) {
    AppendComment(&out, 0, file->name() + " declares no services: nothing to compile here.");
  }
  out += "#include \"" + HeaderName(file) + "\"\n";
  if (file->service_count() == 0) return out;
  out += "\n";
  OpenNamespace(&out, file);
  for (int s = 0; s < file->service_count(); ++s) {
    const pb::ServiceDescriptor* service = file->service(s);
    const std::vector<const pb::MethodDescriptor*> methods = GeneratedMethods(service, options);
    if (s > 0) out += "\n";

    const std::string server = ServiceClassName(service);
    const std::string base = "::trellis::Service(\"" + service->full_name() + "\")";
    const std::string body = methods.empty() ? " {}" : " {";
    std::string line = server + "::" + server + "() : " + base + body;
    if (line.size() <= kColumns) {
      out += line + "\n";
    } else {
      out += server + "::" + server + "()\n    : " + base + body + "\n";
    }
    for (const pb::MethodDescriptor* method : methods) {
      std::vector<std::string> args = {absl::StrCat("\"", MethodPath(method), "\""),
                                       absl::StrCat("&", server, "::", CppMethodName(method))};
      if (const char* level = IdempotencyArgument(method)) args.emplace_back(level);
      AppendWrapped(&out, 2, absl::StrCat(ShapeOf(method).add_method, "("), args, ");");
    }
    if (!methods.empty()) out += "}\n";
    out += "\n";

    const std::string client = ClientClassName(service);
    if (methods.empty()) {
      AppendWrapped(&out, 0, client + "::" + client + "(",
                    {"const ::trellis::Channel& /*channel*/"}, ") {}");
      continue;
    }
    AppendWrapped(&out, 0, client + "::" + client + "(", {"const ::trellis::Channel& channel"},
                  ")");
    out += "    : methods_{\n";
    for (const pb::MethodDescriptor* method : methods) {
      std::vector<std::string> args = {"channel", absl::StrCat("\"", MethodPath(method), "\"")};
      if (const char* level = IdempotencyArgument(method)) args.emplace_back(level);
      AppendWrapped(&out, 10, absl::StrCat(".", CppMethodName(method), "{"), args, "},");
    }
    out += "      } {}\n";
  }
  CloseNamespace(&out, file);
  return out;
}

bool Write(pb::compiler::GeneratorContext* context, const std::string& name,
           const std::string& content, std::string* error) {
  std::unique_ptr<pb::io::ZeroCopyOutputStream> stream(context->Open(name));
  void* data = nullptr;
  int size = 0;
  size_t written = 0;
  while (written < content.size()) {
    if (!stream->Next(&data, &size)) {
      *error = std::string(kPluginName) + ": cannot write " + name;
      return false;
    }
    size_t n = std::min(static_cast<size_t>(size), content.size() - written);
    content.copy(static_cast<char*>(data), n, written);
    written += n;
    if (n < static_cast<size_t>(size)) stream->BackUp(size - static_cast<int>(n));
  }
  return true;
}

}  // namespace

bool TrellisGenerator::Generate(const pb::FileDescriptor* file, const std::string& parameter,
                                pb::compiler::GeneratorContext* context, std::string* error) const {
  Options options;
  if (!ParseOptions(parameter, &options, error)) return false;
  if (!Check(file, options, error)) return false;
  return Write(context, HeaderName(file), GenerateHeader(file, options), error) &&
         Write(context, SourceName(file), GenerateSource(file, options), error);
}

}  // namespace trellis::codegen
