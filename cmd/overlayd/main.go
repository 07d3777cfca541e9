// Command overlayd is a userspace overlay network for containers,
// compatible with flanneld's etcd registry and wire formats.
//
//	overlayd [run] [flags]         run the daemon on this host (the default)
//	overlayd etcd [flags]          run an embedded single-node etcd
//	overlayd config get|put        read or write the network config
//	overlayd leases                list the subnet leases
//	overlayd status                show a running daemon's lease, peers and counters
//	overlayd docker-opts [flags]   write dockerd's options from the subnet file (mk-docker-opts.sh)
//	overlayd version
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

var version = "dev"

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string) error
}

var commands = []command{
	{"run", "run the overlay daemon on this host (default)", runDaemon},
	{"etcd", "run an embedded single-node etcd for demos, tests and small clusters", runEtcd},
	{"config", "get or put the network config (<prefix>/config)", runConfig},
	{"leases", "list the subnet leases in the registry", runLeases},
	{"status", "show a running overlayd's lease, peers and counters", runStatus},
	{"docker-opts", "write dockerd's --bip/--mtu/--ip-masq from the subnet file, or merge them into daemon.json", runDockerOpts},
	{"version", "print the version", func(context.Context, []string) error { fmt.Println("overlayd", version); return nil }},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	args := os.Args[1:]
	cmd := commands[0]
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		found := false
		for _, c := range commands {
			if c.name == args[0] {
				cmd, args, found = c, args[1:], true
				break
			}
		}
		if !found {
			fmt.Fprintf(os.Stderr, "overlayd: unknown command %q\n\n", args[0])
			usage()
			os.Exit(2)
		}
	}
	if err := cmd.run(ctx, args); err != nil {
		fmt.Fprintf(os.Stderr, "overlayd %s: %v\n", cmd.name, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: overlayd [command] [flags]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(os.Stderr, "\n`overlayd <command> -h` lists a command's flags.\n")
}
