// Running python3-grpcio peers (tests/python) as child processes: their command line and
// environment. The build defines where the python, the scripts and the generated messages are.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "subprocess.hpp"

#ifndef TRELLIS_TEST_PYTHON
#error "TRELLIS_TEST_PYTHON (the python3 with grpcio) must be defined by the build"
#endif
#ifndef TRELLIS_TEST_PYTHON_SCRIPTS
#error "TRELLIS_TEST_PYTHON_SCRIPTS (tests/python) must be defined by the build"
#endif
#ifndef TRELLIS_TEST_PYTHON_PROTOS
#error "TRELLIS_TEST_PYTHON_PROTOS (the protoc --python_out directory) must be defined by the build"
#endif

namespace trellis::testing {

// The command line that runs tests/python/`script` with `args`.
inline std::vector<std::string> python(const std::string& script, std::vector<std::string> args) {
  std::vector<std::string> argv = {TRELLIS_TEST_PYTHON,
                                   std::string(TRELLIS_TEST_PYTHON_SCRIPTS) + "/" + script};
  argv.insert(argv.end(), std::make_move_iterator(args.begin()),
              std::make_move_iterator(args.end()));
  return argv;
}

// The generated message modules on the path; no bytecode written next to the scripts.
inline Subprocess::Env python_env() {
  return {{"PYTHONPATH", TRELLIS_TEST_PYTHON_PROTOS},
          {"PYTHONDONTWRITEBYTECODE", "1"},
          {"PYTHONUNBUFFERED", "1"}};
}

// The python reference server (tests/python/echo_server.py: trellis.testing.Echo), listening on
// a free loopback port; it exits when the test process goes away.
class PythonServer : public ChildServer {
 public:
  PythonServer()
      : ChildServer(python("echo_server.py", {"--port", "0", "--exit-on-stdin-eof"}), python_env(),
                    deadline_in(std::chrono::seconds(30))) {}
};

}  // namespace trellis::testing
