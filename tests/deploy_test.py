#!/usr/bin/python3
"""Checks examples/deploy: the Kubernetes manifests say what docs/production.md promises, the
Dockerfile's runtime stage installs every library the built server links, and the server's
health service answers exactly what the manifests' kubelet gRPC probes ask.

Usage: deploy_test.py DEPLOY_DIR GREETER_SERVER HEALTH_CLIENT_PY
(PYTHONPATH must hold the generated health_pb2; run with the python3 that has grpcio and yaml.)
"""

import os
import re
import subprocess
import sys

import yaml

TIMEOUT_S = 60
failures = []


def check(condition, what):
    print('%s %s' % ('PASS' if condition else 'FAIL', what))
    if not condition:
        failures.append(what)


def flag(args, name, default=None):
    return args[args.index(name) + 1] if name in args else default


def check_manifests(path):
    with open(path, encoding='utf-8') as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    kinds = {d['kind']: d for d in docs}
    check(set(kinds) == {'Deployment', 'Service'}, 'the manifests hold a Deployment and a Service')
    deployment, service = kinds['Deployment'], kinds['Service']
    pod = deployment['spec']['template']['spec']
    container = pod['containers'][0]
    port = container['ports'][0]['containerPort']
    probes = []
    for name in ('readinessProbe', 'livenessProbe'):
        probe = container.get(name, {})
        check('grpc' in probe, '%s is a native gRPC probe' % name)
        check(probe.get('grpc', {}).get('port') == port, '%s probes the container port' % name)
        probes.append(probe.get('grpc', {}).get('service', ''))
    grace_s = int(flag(container['args'], '--grace_ms', '5000')) / 1000
    check(pod['terminationGracePeriodSeconds'] > grace_s,
          'terminationGracePeriodSeconds (%s) is above the drain grace (%s s)' %
          (pod['terminationGracePeriodSeconds'], grace_s))
    check(deployment['spec']['selector']['matchLabels'] ==
          deployment['spec']['template']['metadata']['labels'],
          'the Deployment selects its own pods')
    check(service['spec'].get('clusterIP') == 'None', 'the Service is headless (clusterIP: None)')
    check(service['spec']['selector'] == deployment['spec']['template']['metadata']['labels'],
          'the Service selects the Deployment\'s pods')
    check(service['spec']['ports'][0]['port'] == port, 'the Service exposes the gRPC port')
    return container['args'], probes


def check_dockerfile(path, server):
    with open(path, encoding='utf-8') as f:
        text = f.read()
    froms = re.findall(r'^FROM\s+(\S+)(?:\s+AS\s+(\S+))?', text, re.M)
    check(len(froms) == 2, 'the Dockerfile has two stages')
    check(froms[0][0] == 'debian:12' and froms[-1][0].startswith('debian:12'),
          'both stages are Debian 12')
    check('COPY --from=%s' % froms[0][1] in text, 'the runtime stage copies from the build stage')
    runtime = text[text.rindex('FROM'):]
    installed = set(re.findall(r'\b(lib[\w.+-]+|ca-certificates)\b', runtime))
    # The packages of the shared libraries the built server links (libc and libstdc++ come with
    # the base image).
    libs = subprocess.run(['ldd', server], capture_output=True, text=True, check=True).stdout
    needed = set()
    for path in re.findall(r'=> (/\S+)', libs):
        owner = subprocess.run(['dpkg', '-S', os.path.realpath(path)], capture_output=True,
                               text=True)
        if owner.returncode == 0:
            needed.add(owner.stdout.split(':')[0])
    needed -= {'libc6', 'libstdc++6', 'libgcc-s1', 'zlib1g'}
    # A sanitizer build of the tests links the sanitizers' runtimes; a Release image does not.
    needed = {p for p in needed if not re.match(r'lib(a|ub|t|l)san\d*$', p)}
    missing = sorted(needed - installed)
    check(not missing, 'the runtime stage installs every library package the server links %s' %
          (('(missing: %s)' % ', '.join(missing)) if missing else sorted(needed)))


def check_probe(server, health_client, args, services):
    args = [a for a in args]
    args[args.index('--port') + 1] = '0'
    args[args.index('--host') + 1] = '127.0.0.1'
    proc = subprocess.Popen([server] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r'listening on port (\d+)', line)
        check(m is not None, 'the server started with the manifest\'s arguments (%r)' % line)
        if not m:
            return
        target = '127.0.0.1:' + m.group(1)
        for service in sorted(set(services)):
            out = subprocess.run(['/usr/bin/python3', health_client, '--target', target, 'check',
                                  service], capture_output=True, text=True, timeout=TIMEOUT_S)
            check(out.stdout == "check %r: SERVING\n" % service,
                  'the kubelet probe (service %r) gets SERVING: %r' % (service,
                                                                        out.stdout + out.stderr))
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT_S)
    check(proc.returncode == 0, 'the server exits 0 on SIGTERM (got %s)' % proc.returncode)

    # --health=false: no health service, and the probe's Check is UNIMPLEMENTED.
    proc = subprocess.Popen([server] + args + ['--health=false'], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        m = re.search(r'listening on port (\d+)', proc.stdout.readline())
        check(m is not None, 'the server started with --health=false')
        if m:
            out = subprocess.run(['/usr/bin/python3', health_client, '--target',
                                  '127.0.0.1:' + m.group(1), 'check', ''],
                                 capture_output=True, text=True, timeout=TIMEOUT_S)
            check(out.stdout == "check '': error UNIMPLEMENTED\n",
                  'with --health=false, Check is UNIMPLEMENTED: %r' % (out.stdout + out.stderr))
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT_S)


def main():
    deploy_dir, server, health_client = sys.argv[1:4]
    args, probes = check_manifests(os.path.join(deploy_dir, 'k8s', 'greeter.yaml'))
    check_dockerfile(os.path.join(deploy_dir, 'Dockerfile'), server)
    check_probe(server, health_client, args, probes)
    print('%d failed' % len(failures))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
