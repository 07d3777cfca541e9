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
//	overlayd help [command]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/overlayd/overlayd/subnet"
)

var version = "dev"

// command is one subcommand. A new subcommand is one entry in commands:
// its run parses its flags with newFlagSet and parseFlags, which give it
// `overlayd help <name>` and `overlayd <name> --help`.
type command struct {
	name    string
	args    string // what follows the name in the usage line
	summary string // one line for the command list
	run     func(ctx context.Context, args []string) error
}

// commands is filled in init: the run functions refer back to it (through
// newFlagSet) for their usage line.
var commands []command

func init() {
	commands = []command{
		{"run", "[flags]", "run the overlay daemon on this host (the default command)", runDaemon},
		{"etcd", "[flags]", "run an embedded single-node etcd for demos, tests and small clusters", runEtcd},
		{"config", "get|put [flags] ['<json>' | @file]", "read or write the network config (<etcd-prefix>/config)", runConfig},
		{"leases", "[flags]", "list the subnet leases in the registry, with the time each has left", runLeases},
		{"status", "[flags]", "show the running overlayd's lease, peers and counters (this network namespace's)", runStatus},
		{"docker-opts", "[flags]", "write dockerd's --bip/--mtu/--ip-masq from the subnet file (mk-docker-opts.sh), or merge them into daemon.json", runDockerOpts},
		{"version", "", "print the version", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// dispatch runs the command args name and returns the exit code: 0, 1 for
// a failure, 2 for a command line that cannot be understood.
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "help", "-h", "-help", "--help":
			if args[0] == "help" && len(args) > 1 {
				c, ok := lookup(args[1])
				if !ok {
					fmt.Fprintf(stderr, "overlayd help: unknown command %q%s\n\n", args[1], nearestCommand(args[1]))
					usage(stderr)
					return 2
				}
				return finish(c, c.run(ctx, []string{"-h"}), stderr)
			}
			usage(stdout)
			if args[0] == "help" {
				fmt.Fprintln(stdout, "run is the default command: `overlayd help run` shows the daemon's flags.")
				return 0
			}
			// overlayd --help, as flanneld --help: the daemon's flags too.
			fmt.Fprintln(stdout)
			c, _ := lookup("run")
			return finish(c, c.run(ctx, []string{"-h"}), stderr)
		}
	}
	c, _ := lookup("run")
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		var ok bool
		if c, ok = lookup(args[0]); !ok {
			fmt.Fprintf(stderr, "overlayd: unknown command %q%s\n\n", args[0], nearestCommand(args[0]))
			usage(stderr)
			return 2
		}
		args = args[1:]
	}
	return finish(c, c.run(ctx, args), stderr)
}

// finish turns a command's error into an exit code: a help request is
// success; a flag the environment set is named as such.
func finish(c command, err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "overlayd %s: %v\n", c.name, err)
		return 2
	}
	fmt.Fprintf(stderr, "overlayd %s: %v\n", c.name, explainEnv(err))
	return 1
}

// nearestCommand is "; did you mean X?" for a misspelt command, or "".
func nearestCommand(name string) string {
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	if near := subnet.NearestName(name, names); near != "" {
		return fmt.Sprintf("; did you mean %s?", near)
	}
	return ""
}

func lookup(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: overlayd [command] [flags]\n\ncommands:\n")
	width := 0
	for _, c := range commands {
		width = max(width, len(c.name))
	}
	for _, c := range commands {
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.name, c.summary)
	}
	fmt.Fprintf(w, "\n`overlayd help <command>` or `overlayd <command> --help` shows a command's flags.\n")
}

func runVersion(ctx context.Context, args []string) error {
	fs := newFlagSet("version")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Println("overlayd", version)
	return nil
}
