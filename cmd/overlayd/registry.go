package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/overlayd/overlayd/subnet"
	"github.com/overlayd/overlayd/subnet/etcd"
	"github.com/overlayd/overlayd/tunnel"
	"github.com/overlayd/overlayd/tunnel/underlay"
)

// runConfig reads or writes <prefix>/config; put validates before it writes.
func runConfig(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "get" && args[0] != "put") {
		fs := newFlagSet("config")
		var ef etcdFlags
		ef.register(fs)
		if wantsHelp(args) {
			return parseFlags(fs, args)
		}
		hint := ""
		if slices.Contains(args, "get") || slices.Contains(args, "put") {
			hint = " (get or put goes first, before the flags)"
		}
		return usagef("usage: overlayd config get [flags] | overlayd config put [flags] '<json>' | @file%s", hint)
	}
	verb := args[0]
	fs := newFlagSet("config " + verb)
	var ef etcdFlags
	ef.register(fs)
	takesArgs[fs] = verb == "put"
	var asJSON *bool
	if verb == "get" {
		asJSON = fs.Bool("json", false, "print the config as JSON that config put takes back, defaults written out "+
			"(SubnetMin, SubnetMax: drop them when you change Network or SubnetLen); fields overlayd ignores are left out")
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if verb == "put" && fs.NArg() != 1 {
		return usagef("%s", `config put takes one argument besides its flags: the JSON, or @file, e.g. '{"Network":"100.96.0.0/16","Backend":{"Type":"udp"}}'`)
	}
	if err := ef.validate(); err != nil {
		return err
	}
	// The file first: a mistake in it is said before anything of etcd.
	var raw []byte
	if verb == "put" {
		raw = []byte(fs.Arg(0))
		if path, ok := strings.CutPrefix(fs.Arg(0), "@"); ok {
			var err error
			if raw, err = os.ReadFile(path); err != nil {
				return err
			}
		}
	}
	reg, err := etcd.New(ef.options())
	if err != nil {
		return err
	}
	defer reg.Close()
	if err := reg.CheckReachable(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()

	if verb == "get" {
		cfg, err := reg.GetConfig(ctx)
		if err != nil {
			return err
		}
		if cfg.Ignored != nil {
			fmt.Fprintf(os.Stderr, "warning: overlayd ignores these fields of %s/config, and config get leaves them out:\n%v\n", ef.prefix, cfg.Ignored)
		}
		if *asJSON {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(effectiveConfig(cfg))
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
	if err := reg.PutConfig(ctx, raw); err != nil {
		return err
	}
	fmt.Printf("wrote %s/config\n", ef.prefix)
	return nil
}

// configJSON is the network config in flannel's field names with the
// defaults written out: what overlayd runs with, and what config put takes
// back. Fields overlayd does not implement (subnet.Config.Ignored) are left
// out, as config put would refuse them.
type configJSON struct {
	Network   string
	SubnetLen int
	SubnetMin string
	SubnetMax string
	Backend   backendJSON
}

// backendJSON is configJSON's Backend object.
type backendJSON struct {
	Type string
	Port int  `json:",omitempty"` // none for host-gw
	VNI  *int `json:",omitempty"` // vxlan only, where 0 is a VNI too
	MTU  int  `json:",omitempty"` // vxlan only, when set
}

// effectiveConfig is cfg as config get --json prints it.
func effectiveConfig(cfg *subnet.Config) configJSON {
	c := configJSON{
		Network:   cfg.Network.String(),
		SubnetLen: cfg.SubnetLen,
		SubnetMin: cfg.SubnetMin.String(),
		SubnetMax: cfg.SubnetMax.String(),
		Backend: backendJSON{
			Type: cfg.Backend.Type,
			Port: cfg.Backend.Port,
			MTU:  cfg.Backend.MTU,
		},
	}
	if cfg.Backend.Type == subnet.BackendVXLAN {
		vni := cfg.Backend.VNI
		c.Backend.VNI = &vni
	}
	return c
}

// runLeases lists the subnet leases, flanneld's and ours alike.
func runLeases(ctx context.Context, args []string) error {
	fs := newFlagSet("leases")
	var ef etcdFlags
	ef.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := ef.validate(); err != nil {
		return err
	}
	reg, err := etcd.New(ef.options())
	if err != nil {
		return err
	}
	defer reg.Close()
	if err := reg.CheckReachable(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	leases, err := reg.ListLeasesExpiring(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(leases)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tPUBLIC IP\tBACKEND\tEXPIRES IN")
	now := time.Now()
	for _, l := range leases {
		bt := l.Attrs.BackendType
		if bt == "" {
			bt = "udp"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.Subnet, l.Attrs.PublicIP, bt, expiresIn(l, now))
	}
	return tw.Flush()
}

// expiresIn is a lease's remaining time, to the second.
func expiresIn(l subnet.Lease, now time.Time) string {
	if l.Expiration.IsZero() {
		return "never (no TTL: a reservation)"
	}
	left := l.Expiration.Sub(now).Round(time.Second)
	if left <= 0 {
		return "expiring"
	}
	return left.String()
}

// runStatus asks a running overlayd over its control socket.
func runStatus(ctx context.Context, args []string) error {
	fs := newFlagSet("status")
	tunName := fs.String("tun-name", "flannel0", "the daemon's --tun-name: names its default control socket")
	socket := fs.String("control-socket", "", "the daemon's --control-socket (default @overlayd/<tun-name>, this network namespace's)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	asked := *socket
	if *socket == "" {
		*socket = defaultControlSocket(*tunName)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := tunnel.QueryStatus(ctx, *socket)
	if err != nil {
		// A daemon started with its own --control-socket still holds
		// the lock of its TUN name here, and its command line or
		// environment says which socket it took.
		pid, lerr := lockHolder(lockName(*tunName))
		if asked != "" || lerr != nil {
			return err
		}
		own, found := controlSocketOf("/proc", pid)
		if !found || own == *socket {
			return fmt.Errorf("overlayd pid %d runs with --tun-name %s in this network namespace but not on the default control socket %s: "+
				"it was given another --control-socket (or OVERLAYD_CONTROL_SOCKET); pass the same to overlayd status", pid, *tunName, *socket)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // the first try may have used the other up
		defer cancel()
		if s, err = tunnel.QueryStatus(ctx, own); err != nil {
			return fmt.Errorf("overlayd pid %d (--tun-name %s) was given --control-socket %s: %w", pid, *tunName, own, err)
		}
		fmt.Fprintf(os.Stderr, "overlayd pid %d answers on its --control-socket %s\n", pid, own)
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
	// Sorted, so that two calls print their counters in the same order.
	for _, r := range slices.Sorted(maps.Keys(st.Drops)) {
		if n := st.Drops[r]; n > 0 {
			fmt.Printf("dropped %s: %d\n", r, n)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Underlay)) {
		if n := s.Underlay[k]; n > 0 {
			fmt.Printf("underlay %s: %d\n", k, n)
		}
	}
	for i, q := range s.UnderlayQueues {
		fmt.Printf("underlay queue %d: received %d, sent %d\n", i, q[underlay.CounterReceived], q[underlay.CounterSent])
	}
	if p := s.IdlePoll; p != nil {
		state := "CPUs may halt (no packets lately)"
		if p.Held {
			state = "CPUs poll (packets flowing)"
		}
		if p.Error != "" {
			state = "off, " + p.Error
		}
		fmt.Printf("idle poll: %s; held %d times\n", state, p.Holds)
	}
	if p := s.BusyPoll; p != nil {
		fmt.Printf("busy poll: up to %s; %d reads caught a packet polling, %d slept\n", p.Max, p.Caught, p.Slept)
		for _, r := range p.Readers {
			fmt.Printf("  worker %d %-9s %d caught, %d slept\n", r.Worker, r.Reads+":", r.Caught, r.Slept)
		}
	}
	return nil
}

// controlSocketOf finds the --control-socket a running overlayd was given,
// as its parseFlags read it: the command line's last, else
// OVERLAYD_CONTROL_SOCKET, else FLANNELD_CONTROL_SOCKET, under proc
// (normally "/proc"). A relative path is the daemon's, from its working
// directory.
func controlSocketOf(proc string, pid int) (string, bool) {
	dir := filepath.Join(proc, strconv.Itoa(pid))
	socket, found := "", false
	if data, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		args := strings.Split(strings.TrimRight(string(data), "\x00"), "\x00")
		for i, a := range args {
			if a == "--" {
				break
			}
			name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
			switch {
			case !strings.HasPrefix(a, "-") || name != "control-socket":
			case hasValue:
				socket, found = value, true
			case i+1 < len(args):
				socket, found = args[i+1], true
			}
		}
	}
	if !found {
		if data, err := os.ReadFile(filepath.Join(dir, "environ")); err == nil {
			env := map[string]string{}
			for _, kv := range strings.Split(string(data), "\x00") {
				if k, v, ok := strings.Cut(kv, "="); ok {
					env[k] = v
				}
			}
			for _, key := range envKeys("control-socket") {
				if v, ok := env[key]; ok {
					socket, found = v, true
					break
				}
			}
		}
	}
	if !found || socket == "" {
		return "", false
	}
	if !strings.HasPrefix(socket, "@") && !filepath.IsAbs(socket) {
		cwd, err := os.Readlink(filepath.Join(dir, "cwd"))
		if err != nil {
			return "", false
		}
		socket = filepath.Join(cwd, socket)
	}
	return socket, true
}
