// Command overlayd-lab runs overlayd on emulated hosts (network namespaces):
//
//	overlayd-lab demo [--overlayd bin/overlayd] [--hosts 3]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/overlayd/overlayd/perf/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) < 2 || os.Args[1] != "demo" {
		fmt.Fprintln(os.Stderr, "usage: overlayd-lab demo [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	var opts demo.Options
	fs.StringVar(&opts.Overlayd, "overlayd", "bin/overlayd", "the overlayd binary")
	fs.IntVar(&opts.Hosts, "hosts", 3, "emulated hosts (2..8)")
	mib := fs.Int64("transfer-mib", 64, "MiB to send across hosts over TCP")
	fs.BoolVar(&opts.KeepWorkDir, "keep", false, "keep the work directory (logs) after the run")
	fs.Parse(os.Args[2:])
	opts.TransferBytes = *mib << 20
	if err := demo.Run(ctx, opts, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}
