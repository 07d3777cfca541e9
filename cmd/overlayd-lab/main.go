// Command overlayd-lab runs overlayd on emulated hosts (network namespaces):
//
//	overlayd-lab demo  [--overlayd bin/overlayd] [--hosts 3]
//	overlayd-lab up    [--overlayd bin/overlayd] [--hosts 2]   (a lab kept until Ctrl-C)
//	overlayd-lab bench [--overlayd bin/overlayd] [--systems host-gw,kernel-vxlan,overlayd-udp] [--duration 10s] [--runs 3] [--out file.json]
//	                   [--quick] [--sweeps tcp_window,udp_size,tcp_size|none] [--sweep-duration 2s]
//	                   [--mtu 9000] [--delay 1ms] [--loss 0.1] [--rate 10gbit] [--flanneld PATH]
//	overlayd-lab bench --rerender perf/results/bench-<time>.json   (charts and report again)
//	overlayd-lab rr server [--listen 0.0.0.0:5301]                  (request/response echo server, TCP and UDP)
//	overlayd-lab rr client --server ADDR:PORT [--proto tcp] [--size 64] [--duration 10s]   (prints JSON)
//	overlayd-lab clean                                              (namespaces left by killed runs)
//
// The bench runs the rr client and server in the emulated containers.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/overlayd/overlayd/perf/bench"
	"github.com/overlayd/overlayd/perf/demo"
	"github.com/overlayd/overlayd/perf/netns"
	"github.com/overlayd/overlayd/perf/topo"
	"github.com/overlayd/overlayd/perf/traffic"
)

// commands are overlayd-lab's, with what each does for its help.
var commands = []struct{ name, summary string }{
	{"demo", "3 emulated hosts, etcd and overlayd on each, ping and a TCP transfer between containers, a report; removes everything after (make demo)"},
	{"up", "a lab of emulated hosts kept up until Ctrl-C, to try overlayd status, leases, iperf3, tcpdump or pprof by hand"},
	{"bench", "overlayd against the kernel (host-gw, kernel VXLAN) on emulated hosts: throughput, latency, CPU; tables, charts, a report (make bench)"},
	{"rr", "one end of a request/response latency test (server or client), as the bench runs them in the containers"},
	{"clean", "delete the network namespaces left by runs that were killed (SIGKILL) and could not clean up"},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "demo":
		err = runDemo(ctx, os.Args[2:])
	case "bench":
		err = runBench(ctx, os.Args[2:])
	case "up":
		err = runUp(ctx, os.Args[2:])
	case "rr":
		err = runRR(ctx, os.Args[2:])
	case "clean":
		err = runClean(os.Args[2:])
	case "help", "-h", "-help", "--help":
		if len(os.Args) > 2 && os.Args[1] == "help" {
			os.Args = []string{os.Args[0], os.Args[2], "-h"}
			main()
			return
		}
		usage(os.Stdout)
		return
	default:
		fmt.Fprintf(os.Stderr, "overlayd-lab: unknown command %q\n\n", os.Args[1])
		usage(os.Stderr)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s failed: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: overlayd-lab command [flags]\n\nRuns overlayd on emulated hosts (network namespaces); needs root.\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-5s  %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\n`overlayd-lab <command> --help` (or help <command>) shows a command's flags.\n")
}

// newFlagSet is a command's flag set, whose -h says what the command does.
func newFlagSet(name, args string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: overlayd-lab %s %s\n\n", name, args)
		for _, c := range commands {
			if strings.HasPrefix(name, c.name) {
				fmt.Fprintf(w, "%s%s.\n", strings.ToUpper(c.summary[:1]), c.summary[1:])
			}
		}
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintf(w, "\nflags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

func runDemo(ctx context.Context, args []string) error {
	fs := newFlagSet("demo", "[flags]")
	var opts demo.Options
	fs.StringVar(&opts.Overlayd, "overlayd", defaultOverlayd(), "the overlayd binary")
	fs.IntVar(&opts.Hosts, "hosts", 3, "emulated hosts (2..8)")
	mib := fs.Int64("transfer-mib", 64, "MiB to send across hosts over TCP")
	fs.BoolVar(&opts.KeepWorkDir, "keep", false, "keep the work directory (logs) after the run")
	fs.Parse(args)
	opts.TransferBytes = *mib << 20
	if opts.Hosts < 2 || opts.Hosts > topo.MaxHosts {
		return fmt.Errorf("--hosts %d: want 2 to %d", opts.Hosts, topo.MaxHosts)
	}
	noteStale(os.Stderr)
	return demo.Run(ctx, opts, os.Stdout)
}

func runUp(ctx context.Context, args []string) error {
	fs := newFlagSet("up", "[flags]")
	var opts demo.Options
	fs.StringVar(&opts.Overlayd, "overlayd", defaultOverlayd(), "the overlayd binary")
	fs.IntVar(&opts.Hosts, "hosts", 2, "emulated hosts (2..8)")
	fs.StringVar(&opts.NetworkConfig, "config", "", "network config JSON (default: the udp backend on 100.96.0.0/16)")
	extra := fs.String("overlayd-flags", "", "extra flags for every overlayd, space-separated")
	fs.BoolVar(&opts.KeepWorkDir, "keep", false, "keep the work directory (logs, etcd data) after Ctrl-C")
	fs.Parse(args)
	opts.DaemonArgs = strings.Fields(*extra)
	if opts.Hosts < 2 || opts.Hosts > topo.MaxHosts {
		return fmt.Errorf("--hosts %d: want 2 to %d", opts.Hosts, topo.MaxHosts)
	}
	noteStale(os.Stderr)
	return demo.Up(ctx, opts, os.Stdout)
}

// defaultOverlayd is bin/overlayd when run from the repository, else the
// overlayd beside this binary (make builds both into bin/).
func defaultOverlayd() string {
	const inRepo = "bin/overlayd"
	if _, err := os.Stat(inRepo); err == nil {
		return inRepo
	}
	if self, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(self), "overlayd")
		if _, err := os.Stat(beside); err == nil {
			return beside
		}
	}
	return inRepo
}

// noteStale says, before a run, that earlier runs left namespaces behind:
// they are harmless to the run, but take memory, and only the user may
// decide to delete them.
func noteStale(w io.Writer) {
	stale, err := netns.Stale()
	switch {
	case err != nil || len(stale) == 0:
	case len(stale) == 1:
		fmt.Fprintf(w, "note: network namespace %s is left by an overlayd-lab run or a test that no longer runs; overlayd-lab clean deletes it\n", stale[0])
	default:
		fmt.Fprintf(w, "note: %d network namespaces (%s, ...) are left by overlayd-lab runs or tests that no longer run; overlayd-lab clean deletes them\n",
			len(stale), stale[0])
	}
}

func runClean(args []string) error {
	fs := newFlagSet("clean", "")
	fs.Parse(args)
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: clean takes none", fs.Arg(0))
	}
	if err := netns.Available(); err != nil {
		return err
	}
	pruned, err := netns.Prune()
	for _, name := range pruned {
		fmt.Println("deleted", name)
	}
	if err == nil && len(pruned) == 0 {
		fmt.Println("no namespace left by a run that no longer runs")
	}
	return err
}

func runBench(ctx context.Context, args []string) error {
	fs := newFlagSet("bench", "[flags]")
	// The ping series waits in a raw system call in this process, holding
	// a P, beside the goroutines that wait for the bench's children.
	runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), traffic.RRProcs))
	opts := bench.Options{Progress: os.Stderr}
	fs.StringVar(&opts.Overlayd, "overlayd", defaultOverlayd(), "the overlayd binary")
	systems := fs.String("systems", strings.Join(bench.DefaultSystems, ","),
		"systems to measure, in table order; known: "+strings.Join(bench.SystemNames(), ", "))
	fs.DurationVar(&opts.Duration, "duration", 0, "length of each iperf3 and request/response (latency) test, whole seconds (default 10s)")
	fs.IntVar(&opts.Rounds, "runs", 0, "rounds over all systems; the table shows medians (default 3)")
	fs.StringVar(&opts.Out, "out", "", "JSON results file, with a .md table beside it (default perf/results/bench-<UTC time>.json)")
	fs.BoolVar(&opts.Keep, "keep", false, "keep the work directory (logs) after a run without failures")
	fs.BoolVar(&opts.Quick, "quick", false, "a first try: one round, 2s tests, 1s sweep points, fewer points (a few minutes)")
	sweeps := fs.String("sweeps", strings.Join(bench.SweepNames, ","), "sweeps to run, or none")
	fs.DurationVar(&opts.SweepDuration, "sweep-duration", 0, "length of each sweep point, whole seconds (default 2s)")
	fs.IntVar(&opts.UnderlayMTU, "mtu", 1500, "MTU of the emulated underlay links (9000: jumbo frames)")
	fs.DurationVar(&opts.Shape.Delay, "delay", 0, "delay added by tc netem to what each host sends on the underlay, e.g. 1ms")
	fs.Float64Var(&opts.Shape.LossPct, "loss", 0, "random loss in percent added by tc netem to what each host sends, e.g. 0.1")
	rate := fs.String("rate", "", "bandwidth cap (tc tbf) on what each host sends on the underlay, e.g. 10gbit")
	fs.StringVar(&opts.Flanneld, "flanneld", "", "a flanneld binary: adds flanneld's udp and vxlan backends as rows (nothing is downloaded)")
	rerender := fs.String("rerender", "", "measure nothing: draw the charts and write the report of this results file again")
	fs.Parse(args)
	if *rerender != "" {
		files, err := bench.Rerender(*rerender)
		if err != nil {
			return err
		}
		fmt.Printf("report: %s\ncharts: %s\n", files.Report, strings.Join(files.Charts, " "))
		return nil
	}
	opts.Systems = strings.Split(*systems, ",")
	opts.Sweeps = []string{}
	if *sweeps != "none" && *sweeps != "" {
		opts.Sweeps = strings.Split(*sweeps, ",")
	}
	if *rate != "" {
		bits, err := topo.ParseRate(*rate)
		if err != nil {
			return fmt.Errorf("--rate: %w", err)
		}
		opts.Shape.RateBit = bits
	}
	opts.Command = strings.Join(os.Args, " ")
	noteStale(os.Stderr)
	_, err := bench.Run(ctx, opts, os.Stdout)
	return err
}

// runRR is one end of a request/response latency test (traffic.RR): the
// bench starts the server in one container and the client in the other.
func runRR(ctx context.Context, args []string) error {
	if len(args) < 1 || (args[0] != "server" && args[0] != "client") {
		fs := newFlagSet("rr", "server|client [flags]   (overlayd-lab rr server --help, rr client --help: their flags)")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
			fs.SetOutput(os.Stdout)
			fs.Usage()
			return nil
		}
		fs.Usage()
		os.Exit(2)
	}
	fs := newFlagSet("rr "+args[0], "[flags]")
	// Its loops wait in raw system calls, each holding a P.
	runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), traffic.RRProcs))
	if args[0] == "server" {
		listen := fs.String("listen", "0.0.0.0:5301", "IPv4 address and port to answer on, TCP and UDP")
		fs.Parse(args[1:])
		addr, err := netip.ParseAddrPort(*listen)
		if err != nil {
			return err
		}
		srv, err := traffic.ListenRR(addr)
		if err != nil {
			return err
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve() }()
		select {
		case err = <-served:
		case <-ctx.Done(): // SIGTERM: a normal stop
		}
		return errors.Join(err, srv.Close())
	}
	var opts traffic.RROptions
	server := fs.String("server", "", "the server's IPv4 address and port")
	fs.StringVar(&opts.Protocol, "proto", "tcp", "tcp or udp")
	fs.IntVar(&opts.Size, "size", traffic.DefaultRRSize, "bytes in each request and response")
	fs.DurationVar(&opts.Duration, "duration", 10*time.Second, "how long to make transactions")
	fs.DurationVar(&opts.Timeout, "timeout", traffic.DefaultRRTimeout, "UDP: wait this long for a response, then count the request lost")
	fs.DurationVar(&opts.Wait, "wait", traffic.DefaultRRWait, "wait this long for the server to answer a first, untimed transaction")
	fs.Parse(args[1:])
	addr, err := netip.ParseAddrPort(*server)
	if err != nil {
		return fmt.Errorf("--server: %w", err)
	}
	opts.Addr = addr
	res, err := traffic.RR(ctx, opts)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}
