// Command overlayd-lab runs overlayd on emulated hosts (network namespaces):
//
//	overlayd-lab demo  [--overlayd bin/overlayd] [--hosts 3]
//	overlayd-lab up    [--overlayd bin/overlayd] [--hosts 2]   (a lab kept until Ctrl-C)
//	overlayd-lab bench [--overlayd bin/overlayd] [--systems host-gw,kernel-vxlan,overlayd-udp] [--duration 10s] [--runs 3] [--out file.json]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/overlayd/overlayd/perf/bench"
	"github.com/overlayd/overlayd/perf/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "demo":
		err = runDemo(ctx, os.Args[2:])
	case "bench":
		err = runBench(ctx, os.Args[2:])
	case "up":
		err = runUp(ctx, os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s failed: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: overlayd-lab demo|bench|up [flags]")
	os.Exit(2)
}

func runDemo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	var opts demo.Options
	fs.StringVar(&opts.Overlayd, "overlayd", "bin/overlayd", "the overlayd binary")
	fs.IntVar(&opts.Hosts, "hosts", 3, "emulated hosts (2..8)")
	mib := fs.Int64("transfer-mib", 64, "MiB to send across hosts over TCP")
	fs.BoolVar(&opts.KeepWorkDir, "keep", false, "keep the work directory (logs) after the run")
	fs.Parse(args)
	opts.TransferBytes = *mib << 20
	return demo.Run(ctx, opts, os.Stdout)
}

func runUp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	var opts demo.Options
	fs.StringVar(&opts.Overlayd, "overlayd", "bin/overlayd", "the overlayd binary")
	fs.IntVar(&opts.Hosts, "hosts", 2, "emulated hosts (2..8)")
	fs.StringVar(&opts.NetworkConfig, "config", "", "network config JSON (default: the udp backend on 100.96.0.0/16)")
	extra := fs.String("overlayd-flags", "", "extra flags for every overlayd, space-separated")
	fs.BoolVar(&opts.KeepWorkDir, "keep", false, "keep the work directory (logs, etcd data) after Ctrl-C")
	fs.Parse(args)
	opts.DaemonArgs = strings.Fields(*extra)
	return demo.Up(ctx, opts, os.Stdout)
}

func runBench(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	opts := bench.Options{Progress: os.Stderr}
	fs.StringVar(&opts.Overlayd, "overlayd", "bin/overlayd", "the overlayd binary")
	systems := fs.String("systems", strings.Join(bench.DefaultSystems, ","),
		"systems to measure, in table order; known: "+strings.Join(bench.SystemNames(), ", "))
	fs.DurationVar(&opts.Duration, "duration", 0, "length of each iperf3 test, whole seconds (default 10s)")
	fs.IntVar(&opts.Rounds, "runs", 0, "rounds over all systems; the table shows medians (default 3)")
	fs.StringVar(&opts.Out, "out", "", "JSON results file, with a .md table beside it (default perf/results/bench-<UTC time>.json)")
	fs.BoolVar(&opts.Keep, "keep", false, "keep the work directory (logs) after a run without failures")
	fs.Parse(args)
	opts.Systems = strings.Split(*systems, ",")
	_, err := bench.Run(ctx, opts, os.Stdout)
	return err
}
