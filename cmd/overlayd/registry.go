package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/overlayd/overlayd/subnet/etcd"
	"github.com/overlayd/overlayd/tunnel"
)

// runConfig reads or writes <prefix>/config; put validates before it writes.
func runConfig(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "get" && args[0] != "put") {
		return errors.New(`usage: overlayd config get [flags] | overlayd config put [flags] '<json>' | @file`)
	}
	verb := args[0]
	fs := flag.NewFlagSet("overlayd config "+verb, flag.ContinueOnError)
	var ef etcdFlags
	ef.register(fs)
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	reg, err := etcd.New(ef.options())
	if err != nil {
		return err
	}
	defer reg.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()

	if verb == "get" {
		cfg, err := reg.GetConfig(ctx)
		if err != nil {
			return err
		}
		// The effective config: what was written, with flannel's defaults filled in.
		fmt.Printf("Network    %s\nSubnetLen  %d\nSubnetMin  %s\nSubnetMax  %s\nBackend    %s (port %d",
			cfg.Network, cfg.SubnetLen, cfg.SubnetMin, cfg.SubnetMax, cfg.Backend.Type, cfg.Backend.Port)
		if cfg.Backend.Type == "vxlan" {
			fmt.Printf(", VNI %d", cfg.Backend.VNI)
		}
		if cfg.Backend.MTU > 0 {
			fmt.Printf(", MTU %d", cfg.Backend.MTU)
		}
		fmt.Println(")")
		return nil
	}
	if fs.NArg() != 1 {
		return errors.New(`config put takes one argument: the JSON, or @file, e.g. '{"Network":"100.96.0.0/16","Backend":{"Type":"udp"}}'`)
	}
	raw := []byte(fs.Arg(0))
	if path, ok := strings.CutPrefix(fs.Arg(0), "@"); ok {
		if raw, err = os.ReadFile(path); err != nil {
			return err
		}
	}
	if err := reg.PutConfig(ctx, raw); err != nil {
		return err
	}
	fmt.Printf("wrote %s/config\n", ef.prefix)
	return nil
}

// runLeases lists the subnet leases, flanneld's and ours alike.
func runLeases(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("overlayd leases", flag.ContinueOnError)
	var ef etcdFlags
	ef.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	reg, err := etcd.New(ef.options())
	if err != nil {
		return err
	}
	defer reg.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	leases, _, err := reg.ListLeases(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(leases)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tPUBLIC IP\tBACKEND\tEXPIRES")
	for _, l := range leases {
		bt := l.Attrs.BackendType
		if bt == "" {
			bt = "udp"
		}
		exp := "-" // the listing does not carry expirations
		if !l.Expiration.IsZero() {
			exp = l.Expiration.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.Subnet, l.Attrs.PublicIP, bt, exp)
	}
	return tw.Flush()
}

// runStatus asks a running overlayd over its control socket.
func runStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("overlayd status", flag.ContinueOnError)
	socket := fs.String("control-socket", "/run/overlayd/flannel0.sock", "the daemon's --control-socket")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := tunnel.QueryStatus(ctx, *socket)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	fmt.Printf("subnet %s of %s, backend %s, mtu %d, ready=%v\n", s.Subnet, s.Network, s.Backend, s.MTU, s.Ready)
	switch {
	case s.TUN != "" && s.Port != 0:
		fmt.Printf("device %s, underlay %s at %s:%d\n", s.TUN, s.Iface, s.PublicIP, s.Port)
	case s.TUN != "":
		fmt.Printf("device %s, underlay %s at %s\n", s.TUN, s.Iface, s.PublicIP)
	default: // host-gw: routes over the underlay itself
		fmt.Printf("routes via underlay %s at %s\n", s.Iface, s.PublicIP)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER SUBNET\tUNDERLAY\tBACKEND")
	for _, p := range s.Peers {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Subnet, p.Underlay, p.Backend)
	}
	tw.Flush()
	st := s.Stats
	fmt.Printf("tx %d packets %d bytes, rx %d packets %d bytes, icmp sent %d\n", st.TxPackets, st.TxBytes, st.RxPackets, st.RxBytes, st.ICMPSent)
	for r, n := range st.Drops {
		if n > 0 {
			fmt.Printf("dropped %s: %d\n", r, n)
		}
	}
	for k, n := range s.Underlay {
		if n > 0 {
			fmt.Printf("underlay %s: %d\n", k, n)
		}
	}
	return nil
}
