# shellcheck shell=bash
# Shared by the shell tests (source it): test certificates made by openssl (EC P-256, valid two
# days) into a directory the caller owns and removes.
#
#   make_test_certs DIR  writes, each as NAME.pem and NAME.key in DIR:
#                          ca      a CA, which signed the others;
#                          server  a server's, CN and SAN localhost, SAN 127.0.0.1;
#                          named   a server's that names only interop.trellis.test (a client
#                                  reaching it by address must be told that name to accept it);
#                          client  a client's, CN trellis-test-client.
#                        Non-zero, with openssl's complaint on stderr, if one could not be made.

make_test_certs() {
  local dir=$1
  _make_cert() {  # _make_cert NAME CN [openssl req options...]
    local name=$1 cn=$2
    shift 2
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -keyout "$dir/$name.key" -out "$dir/$name.pem" -subj "/O=Trellis Test/CN=$cn" "$@" \
      2>"$dir/openssl.log" || { cat "$dir/openssl.log" >&2; return 1; }
  }
  local signed=(-CA "$dir/ca.pem" -CAkey "$dir/ca.key")
  _make_cert ca "Trellis Test CA" -addext basicConstraints=critical,CA:TRUE &&
    _make_cert server localhost "${signed[@]}" -addext subjectAltName=DNS:localhost,IP:127.0.0.1 &&
    _make_cert named interop.trellis.test "${signed[@]}" \
      -addext subjectAltName=DNS:interop.trellis.test &&
    _make_cert client trellis-test-client "${signed[@]}"
}
