#!/usr/bin/env python3
"""What a Trellis runtime's workers did over an interval, from its /metrics endpoint.

    scripts/runtime_report.py http://HOST:PORT/metrics [--interval 5]

Scrapes the endpoint twice, `interval` seconds apart, and prints a markdown table per worker:
busy share of the interval, polls per second, mean and longest poll, the poll-time histogram's
share of polls over 1 ms, completion-queue events per second, and the queue depths and pending
timers at the second scrape; then the runtime-wide gauges and counters. docs/runtime.md explains
how to read them. Only the Python standard library is used.
"""
import argparse
import re
import sys
import time
import urllib.request

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(url):
    """{(name, frozenset(labels)): value} of every sample of the exposition at `url`."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        match = SAMPLE.match(line)
        if not match:
            continue
        name, labels, value = match.groups()
        key = frozenset(LABEL.findall(labels or ''))
        samples[(name, key)] = float(value)
    return samples


def worker_value(samples, name, worker, extra=()):
    return samples.get((name, frozenset((('worker', worker),) + tuple(extra))), 0.0)


def workers_of(samples):
    return sorted({dict(labels)['worker'] for (name, labels) in samples
                   if name == 'trellis_runtime_worker_polls_total'}, key=int)


def report(before, after, interval):
    rows = []
    for w in workers_of(after):
        def delta(name, extra=()):
            return worker_value(after, name, w, extra) - worker_value(before, name, w, extra)
        polls = delta('trellis_runtime_worker_polls_total')
        busy = delta('trellis_runtime_worker_busy_seconds_total')
        over_1ms = polls - delta('trellis_runtime_worker_poll_seconds_bucket', (('le', '0.001'),))
        rows.append([
            w,
            f'{100 * busy / interval:.1f} %',
            f'{polls / interval:,.0f}',
            f'{1e6 * busy / polls:.1f} us' if polls else '-',
            f'{1e3 * worker_value(after, "trellis_runtime_worker_poll_max_seconds", w):.1f} ms',
            f'{100 * over_1ms / polls:.2f} %' if polls else '-',
            f'{delta("trellis_runtime_worker_events_total") / interval:,.0f}',
            f'{worker_value(after, "trellis_runtime_worker_local_queue_depth", w):.0f}',
            f'{worker_value(after, "trellis_runtime_worker_inbox_depth", w):.0f}',
            f'{worker_value(after, "trellis_runtime_worker_timers_pending", w):.0f}',
        ])
    header = ['worker', 'busy', 'polls/s', 'mean poll', 'max poll (ever)', 'polls > 1 ms',
              'cq events/s', 'local queue', 'inbox', 'timers']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]

    def value(name):
        return after.get((name, frozenset()))

    def rate(name):
        now, then = after.get((name, frozenset())), before.get((name, frozenset()))
        return None if now is None or then is None else (now - then) / interval

    runtime = [
        ('tasks alive', value('trellis_runtime_tasks_alive')),
        ('tasks spawned/s', rate('trellis_runtime_tasks_spawned_total')),
        ('tasks failed/s', rate('trellis_runtime_tasks_failed_total')),
        ('unobserved failures (total)', value('trellis_runtime_tasks_unobserved_total')),
        ('server calls in progress', value('trellis_runtime_server_calls')),
        ('client calls in progress', value('trellis_runtime_client_calls')),
        ('blocking pool threads', value('trellis_runtime_blocking_threads')),
        ('blocking pool bound', value('trellis_runtime_blocking_threads_max')),
        ('blocking work queued', value('trellis_runtime_blocking_queue_depth')),
        ('open fds', value('trellis_runtime_open_fds')),
        ('fd limit', value('trellis_runtime_fd_limit')),
    ]
    lines += ['', '| runtime | value |', '| --- | --- |']
    lines += [f'| {label} | {"-" if v is None else f"{v:,.1f}".removesuffix(".0")} |'
              for label, v in runtime]
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('url', help='the /metrics endpoint, e.g. http://127.0.0.1:9464/metrics')
    parser.add_argument('--interval', type=float, default=5.0, help='seconds between the scrapes')
    args = parser.parse_args()
    if args.interval <= 0:
        parser.error('--interval must be positive')
    try:
        before = scrape(args.url)
        start = time.monotonic()
        time.sleep(args.interval)
        after = scrape(args.url)
        interval = time.monotonic() - start
    except OSError as error:
        sys.exit(f'runtime_report: cannot scrape {args.url}: {error}')
    if not workers_of(after):
        sys.exit(f'runtime_report: {args.url} exports no trellis_runtime_worker_* metrics '
                 '(MetricsRegistry::set_runtime was not called?)')
    print(report(before, after, interval))


if __name__ == '__main__':
    main()
