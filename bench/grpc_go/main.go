// grpc_go: a load generator and a server on grpc-go (Debian's golang-google-grpc-dev), for the
// benchmarks of issue 13. A load generator that batches its writes as grpc-go does can saturate
// a server faster than grpc core; bench/stream_load and bench/unary_load (grpc++ clients) cannot.
// The grpc-go server is the bar the native transport is measured against.
//
//	grpc_go load --target HOST:PORT --workload unary|bidi [--concurrency N] [--channels C]
//	             [--window W] [--streams K] [--payload B] [--warmup-s W] [--duration-s S]
//	             [--server-pid PID] [--tls-ca FILE]
//	    prints one JSON line with the fields of bench/unary_load (unary) or bench/stream_load
//	    (bidi), the server's CPU per call or message among them
//	grpc_go server [--port N] [--threads T] [--tls_cert FILE --tls_key FILE]
//	    serves helloworld.Greeter/SayHello and trellis.bench.StreamBench/Echo; prints
//	    "listening on port N"; SIGTERM or SIGINT stops it
//
// With --tls-ca the load generator calls over TLS, trusting that PEM CA and checking the
// server's certificate against "localhost"; with --tls_cert and --tls_key the server serves TLS.
//
// Messages are encoded by hand (a few bytes of protobuf) and passed through a codec that copies
// bytes, so Debian's Go toolchain builds this without protoc plugins for Go. The server thus
// pays no protobuf reflection: an advantage over a grpc-go server with generated code, noted
// where its figures are quoted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// rawCodec passes message bytes through unchanged.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], data...)
	return nil
}
func (rawCodec) Name() string   { return "proto" }
func (rawCodec) String() string { return "proto" }

// field encodes one length-delimited protobuf field.
func field(number int, value []byte) []byte {
	out := []byte{byte(number<<3 | 2)}
	n := len(value)
	for n >= 0x80 {
		out = append(out, byte(n)|0x80)
		n >>= 7
	}
	out = append(out, byte(n))
	return append(out, value...)
}

// firstField returns the value of the first length-delimited field of msg (empty if none).
func firstField(msg []byte) []byte {
	if len(msg) < 2 || msg[0]&7 != 2 {
		return nil
	}
	n, shift, i := 0, 0, 1
	for ; i < len(msg); i++ {
		n |= int(msg[i]&0x7f) << shift
		shift += 7
		if msg[i] < 0x80 {
			i++
			break
		}
	}
	if i+n > len(msg) {
		return nil
	}
	return msg[i : i+n]
}

// ------------------------------------------------------------------------------------ server

func serve(args []string) {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	port := fs.Int("port", 0, "port (0: any free one)")
	threads := fs.Int("threads", 1, "GOMAXPROCS")
	tlsCert := fs.String("tls_cert", "", "PEM certificate chain file: serve TLS with it")
	tlsKey := fs.String("tls_key", "", "PEM private key file of --tls_cert")
	fs.Parse(args)
	runtime.GOMAXPROCS(*threads)
	options := []grpc.ServerOption{grpc.CustomCodec(rawCodec{})}
	if *tlsCert != "" || *tlsKey != "" {
		creds, err := credentials.NewServerTLSFromFile(*tlsCert, *tlsKey)
		if err != nil {
			fmt.Fprintln(os.Stderr, "grpc_go server:", err)
			os.Exit(2)
		}
		options = append(options, grpc.Creds(creds))
	}
	lis, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(*port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc_go server:", err)
		os.Exit(1)
	}
	handler := func(_ interface{}, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		var in []byte
		for {
			if err := stream.RecvMsg(&in); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
			var out []byte
			if strings.HasSuffix(method, "/SayHello") {
				out = field(1, append([]byte("Hello "), firstField(in)...))
			} else {
				out = field(1, firstField(in))
			}
			if err := stream.SendMsg(&out); err != nil {
				return err
			}
		}
	}
	server := grpc.NewServer(append(options, grpc.UnknownServiceHandler(handler))...)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-signals
		server.Stop()
	}()
	fmt.Printf("grpc_go server listening on port %d\n", lis.Addr().(*net.TCPAddr).Port)
	os.Stdout.Sync()
	server.Serve(lis)
}

// ---------------------------------------------------------------------------- load generator

// cpuTicks returns utime+stime of a process from /proc/PID/stat, in clock ticks.
func cpuTicks(pid string) float64 {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return utime + stime
}

// machineTicks returns the busy and total ticks of all CPUs from /proc/stat, and how many CPUs
// the machine has (runtime.NumCPU counts only those this process may run on).
func machineTicks() (busy, total, cpus float64) {
	data, _ := os.ReadFile("/proc/stat")
	lines := strings.Split(string(data), "\n")
	for _, line := range lines[1:] {
		if strings.HasPrefix(line, "cpu") {
			cpus++
		}
	}
	fields := strings.Fields(lines[0])[1:9] // without guest time, already counted as user
	for i, f := range fields {
		v, _ := strconv.ParseFloat(f, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return
}

type window struct {
	server, client, busy, total, cpus float64
	start                             time.Time
}

func snapshot(serverPid string) window {
	busy, total, cpus := machineTicks()
	w := window{client: cpuTicks("self"), busy: busy, total: total, cpus: cpus,
		start: time.Now()}
	if serverPid != "" {
		w.server = cpuTicks(serverPid)
	}
	return w
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[int(p*float64(len(sorted)-1))].Nanoseconds()) / 1000
}

func load(args []string) {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	target := fs.String("target", "", "HOST:PORT")
	workload := fs.String("workload", "unary", "unary or bidi")
	concurrency := fs.Int("concurrency", 50, "unary: calls in flight")
	channels := fs.Int("channels", 4, "unary: connections")
	windowSize := fs.Int("window", 64, "bidi: requests unanswered at most, per stream")
	streams := fs.Int("streams", 1, "bidi: streams on the one connection")
	payload := fs.Int("payload", 16, "bytes of payload per message")
	warmup := fs.Float64("warmup-s", 2, "warmup")
	duration := fs.Float64("duration-s", 10, "measured window")
	serverPid := fs.String("server-pid", "", "the server's pid, for its CPU time")
	tlsCA := fs.String("tls-ca", "", "call over TLS, trusting this PEM CA")
	fs.Parse(args)
	if *target == "" || (*workload != "unary" && *workload != "bidi") {
		fmt.Fprintln(os.Stderr, "grpc_go load: --target and --workload unary|bidi are required")
		os.Exit(2)
	}
	conns := *channels
	if *workload == "bidi" {
		conns = 1
	}
	security := grpc.WithInsecure()
	if *tlsCA != "" {
		creds, err := credentials.NewClientTLSFromFile(*tlsCA, "localhost")
		if err != nil {
			fmt.Fprintln(os.Stderr, "grpc_go load:", err)
			os.Exit(2)
		}
		security = grpc.WithTransportCredentials(creds)
	}
	var clients []*grpc.ClientConn
	for i := 0; i < conns; i++ {
		conn, err := grpc.Dial(*target, security, grpc.WithBlock(),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			fmt.Fprintln(os.Stderr, "grpc_go load:", err)
			os.Exit(1)
		}
		clients = append(clients, conn)
	}

	var measuring, stopping int32
	var count, warmCount, errs int64
	var mu sync.Mutex
	var latencies []time.Duration
	record := func(d time.Duration) {
		if atomic.LoadInt32(&measuring) == 1 {
			atomic.AddInt64(&count, 1)
			mu.Lock()
			latencies = append(latencies, d)
			mu.Unlock()
		} else {
			atomic.AddInt64(&warmCount, 1)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	body := make([]byte, *payload)
	for i := range body {
		body[i] = 'x'
	}
	if *workload == "unary" {
		request := field(1, body)
		for i := 0; i < *concurrency; i++ {
			conn := clients[i%len(clients)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				var reply []byte
				for atomic.LoadInt32(&stopping) == 0 {
					start := time.Now()
					err := conn.Invoke(ctx, "/helloworld.Greeter/SayHello", &request, &reply)
					if err != nil {
						if atomic.LoadInt32(&stopping) == 0 {
							atomic.AddInt64(&errs, 1)
						}
						continue
					}
					record(time.Since(start))
				}
			}()
		}
	} else {
		request := field(3, body)
		desc := &grpc.StreamDesc{StreamName: "Echo", ServerStreams: true, ClientStreams: true}
		for s := 0; s < *streams; s++ {
			stream, err := clients[0].NewStream(ctx, desc, "/trellis.bench.StreamBench/Echo")
			if err != nil {
				fmt.Fprintln(os.Stderr, "grpc_go load:", err)
				os.Exit(1)
			}
			sent := make(chan time.Time, *windowSize)
			wg.Add(2)
			go func() {
				defer wg.Done()
				for atomic.LoadInt32(&stopping) == 0 {
					select {
					case sent <- time.Now():
					case <-ctx.Done():
						return
					}
					if stream.SendMsg(&request) != nil {
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				var reply []byte
				for {
					if err := stream.RecvMsg(&reply); err != nil {
						if atomic.LoadInt32(&stopping) == 0 && !errors.Is(err, context.Canceled) {
							atomic.AddInt64(&errs, 1)
						}
						return
					}
					record(time.Since(<-sent))
				}
			}()
		}
	}

	time.Sleep(time.Duration(*warmup * float64(time.Second)))
	begin := snapshot(*serverPid)
	atomic.StoreInt32(&measuring, 1)
	time.Sleep(time.Duration(*duration * float64(time.Second)))
	atomic.StoreInt32(&measuring, 0)
	end := snapshot(*serverPid)
	n := atomic.LoadInt64(&count)
	atomic.StoreInt32(&stopping, 1)
	cancel()
	wg.Wait()

	elapsed := end.start.Sub(begin.start).Seconds()
	ticks := 100.0 // USER_HZ on Linux
	machine := 0.0
	if end.total > begin.total {
		machine = end.cpus * (end.busy - begin.busy) / (end.total - begin.total)
	}
	clientUtil := (end.client - begin.client) / ticks / elapsed
	serverUtil := (end.server - begin.server) / ticks / elapsed
	other := machine - clientUtil
	if *serverPid != "" {
		other -= serverUtil
	}
	if other < 0 {
		other = 0
	}
	perUnit := 0.0
	if n > 0 {
		perUnit = (end.server - begin.server) / ticks * 1e6 / float64(n)
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	if *workload == "unary" {
		fmt.Printf("{\"requests\": %d, \"errors\": %d, \"window_s\": %.3f, \"rps\": %.1f, "+
			"\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, "+
			"\"concurrency\": %d, \"channels\": %d, \"payload\": %d, \"client\": \"grpc-go\", "+
			"\"client_cpu_util\": %.3f, \"machine_cpu_util\": %.3f, \"server_cpu_util\": %.3f, "+
			"\"server_cpu_us_per_rpc\": %.2f, \"other_cpu_util\": %.3f}\n",
			n, atomic.LoadInt64(&errs), elapsed, float64(n)/elapsed, percentile(latencies, 0.5),
			percentile(latencies, 0.9), percentile(latencies, 0.99), percentile(latencies, 0.999),
			*concurrency, *channels, *payload, clientUtil, machine, serverUtil, perUnit, other)
	} else {
		fmt.Printf("{\"workload\": \"bidi\", \"messages\": %d, \"warmup_messages\": %d, "+
			"\"errors\": %d, \"window_s\": %.3f, \"msgs_per_s\": %.1f, \"payload\": %d, "+
			"\"window\": %d, \"streams\": %d, \"rtt_p50_us\": %.1f, \"rtt_p99_us\": %.1f, "+
			"\"client\": \"grpc-go\", \"client_cpu_util\": %.3f, \"machine_cpu_util\": %.3f, "+
			"\"server_cpu_util\": %.3f, \"server_cpu_us_per_msg\": %.3f, "+
			"\"other_cpu_util\": %.3f}\n",
			n, atomic.LoadInt64(&warmCount), atomic.LoadInt64(&errs), elapsed,
			float64(n)/elapsed, *payload, *windowSize, *streams, percentile(latencies, 0.5),
			percentile(latencies, 0.99), clientUtil, machine, serverUtil, perUnit, other)
	}
	if atomic.LoadInt64(&errs) > 0 {
		os.Exit(1)
	}
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "load" && os.Args[1] != "server") {
		fmt.Fprintln(os.Stderr, "usage: grpc_go load|server [flags]")
		os.Exit(2)
	}
	if os.Args[1] == "load" {
		load(os.Args[2:])
	} else {
		serve(os.Args[2:])
	}
}
