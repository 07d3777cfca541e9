package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/overlayd/overlayd/subnet/etcd"
	"github.com/overlayd/overlayd/tunnel"
	"github.com/overlayd/overlayd/tunnel/firewall"
	"github.com/overlayd/overlayd/tunnel/idlepoll"
)

func runDaemon(ctx context.Context, args []string) error {
	fs := newFlagSet("run")
	var (
		ef           etcdFlags
		lf           logFlags
		cfg          tunnel.Config
		renewMinutes int
		partial      bool
		fwOpts       firewall.Options
		resyncSecs   int
	)
	ef.register(fs)
	lf.register(fs)
	fs.StringVar(&cfg.Iface, "iface", "", "interface (name or IPv4 address) that reaches the other hosts; default: the default route's")
	fs.StringVar(&cfg.PublicIP, "public-ip", "", "IPv4 address other hosts reach this one at; default: the --iface address")
	fs.StringVar(&cfg.SubnetFile, "subnet-file", "/run/flannel/subnet.env", "file the leased subnet is written to (flannel's format)")
	fs.IntVar(&renewMinutes, "subnet-lease-renew-margin", 60, "renew the lease this many minutes before it expires (1..1439)")
	fs.DurationVar(&cfg.LeaseTTL, "subnet-lease-ttl", 24*time.Hour, "lifetime of the subnet lease in etcd")
	fs.StringVar(&cfg.HealthzIP, "healthz-ip", "0.0.0.0", "address of the /healthz, /readyz and /metrics server")
	fs.IntVar(&cfg.HealthzPort, "healthz-port", 0, "port of the /healthz, /readyz and /metrics server (0: off)")
	fs.StringVar(&cfg.TunName, "tun-name", "flannel0", "name of the TUN device: up to 15 letters, digits, '.', '-' or '_'")
	fs.IntVar(&cfg.Queues, "queues", 0, "TUN queues, one forwarding worker each (default: one per CPU)")
	fs.StringVar(&cfg.ControlSocket, "control-socket", "", "unix socket of 'overlayd status' and /metrics: a path, or @name for an abstract socket "+
		"(default @overlayd/<tun-name>: abstract, so one per network namespace)")
	fs.BoolVar(&cfg.ReleaseOnExit, "release-on-exit", false, "delete this host's lease on a clean exit (flanneld keeps it)")
	fs.StringVar(&cfg.VXLANDataplane, "vxlan-dataplane", tunnel.DataplaneUserspace,
		"vxlan backend: \"userspace\" (overlayd forwards) or \"kernel\" (overlayd programs flannel.<VNI>, as flanneld)")
	fs.StringVar(&cfg.UnderlayKind, "underlay", tunnel.UnderlaySocket,
		"how packets reach other hosts: \"socket\" (UDP socket) or \"afpacket\" (AF_PACKET mmap ring). "+
			"afpacket adds no timer; in make bench it is as fast as the socket for request/response and a little slower for bulk "+
			"(the README's bench table, rows overlayd-udp-afpacket and overlayd-udp); it skips the qdisc, netfilter "+
			"and the UDP socket layer on --iface, so use it where those cost on your hosts, else keep the socket (no tc filter, tcpdump sees all)")
	fs.StringVar(&cfg.Steering, "steering", tunnel.SteeringFlow,
		"which worker forwards a packet from the local containers: \"flow\" (by a hash of its flow, so a host's flows "+
			"spread over every worker and core) or \"cpu\" (the worker of the CPU that sent it, pinned to that CPU: "+
			"no wake-up across CPUs, for sparse packets with --busy-poll=0; but all flows of a one-thread sender share one worker; "+
			"see the README's bench)")
	fs.DurationVar(&cfg.BusyPoll, "busy-poll", tunnel.DefaultBusyPoll,
		"how long a forwarding thread that finds its TUN queue or underlay socket (UDP or AF_PACKET ring) empty keeps polling it, yielding its CPU "+
			"to any other runnable thread, before it sleeps: the next packet then finds it running, not asleep on a halted CPU, "+
			"which on a VM is woken through the hypervisor. The window adapts: it opens only while packets follow each other "+
			"within about twice this, or up to eight times this while its polls catch packets (a request/response, quick only once every "+
			"thread on its path polls), and closes for sparse traffic, steady streams it cannot catch, bulk transfers and idle hosts. "+
			"While it polls it keeps a CPU busy that would mostly have idled, and beside CPU-bound neighbours it takes its fair share. "+
			"It pays where waking a halted CPU is dear and a system call cheap; where system calls are dear (some VMs) it may shorten "+
			"nothing: compare make bench's overlayd-udp and overlayd-udp-nobusy rows on your hosts. "+
			"0: sleep at once (see the README's Latency section)")
	fs.DurationVar(&cfg.IdlePoll, "idle-poll", 0,
		"keep every idle CPU of the host polling instead of halting while packets flow, and for 1-2x this after the last "+
			"one, e.g. 1s (a PM QoS CPU latency request of 0 on /dev/cpu_dma_latency, as tuned's latency profiles make): "+
			"each hop then wakes a running CPU, not a halted one, which on a VM is a trip through the hypervisor. "+
			"System-wide: it costs power and, on a VM, host CPU, for as long as traffic flows; none when idle. "+
			"Needs write access to /dev/cpu_dma_latency. 0: off, CPUs idle as the kernel sees fit (see the README's Latency section)")
	fs.BoolVar(&fwOpts.Masquerade, "ip-masq", false,
		"masquerade traffic from the overlay network to anywhere outside it, never traffic inside it (flanneld's --ip-masq); "+
			"the subnet file then says FLANNEL_IPMASQ=true, and Docker must run with --ip-masq=false")
	fs.BoolVar(&fwOpts.Forward, "iptables-forward-rules", true,
		"accept forwarding to and from the overlay network (chain OVERLAYD-FWD), so that a FORWARD DROP policy (Docker's) does not cut traffic between hosts, "+
			"and, from DOCKER-USER, what other hosts' containers send to local ones through the overlay's device, any with host-gw (chain OVERLAYD-FWD-IN: Docker 28 drops it before FORWARD's end)")
	fs.IntVar(&resyncSecs, "iptables-resync", 5, "seconds between checks that the iptables rules are in place; missing ones are put back")
	fs.BoolVar(&partial, "partial-checksums", true,
		"leave the TCP/UDP checksums of packets to peers that advertise they take them so partial, and advertise it; "+
			"false: be a host that needs complete checksums, as flanneld's (sent complete, received checked; for tests)")
	hideFlags(fs, "partial-checksums")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := lf.logger()
	if err != nil {
		return err
	}
	if ignored, hints := envNotFlags(fs); len(ignored) > 0 {
		log.Warn("environment variables that name no flag of overlayd run are ignored", "variables", ignored, "flanneld", hints)
	}
	if cfg.ControlSocket == "" {
		cfg.ControlSocket = defaultControlSocket(cfg.TunName)
	}
	if cfg.Queues == 0 {
		cfg.Queues = runtime.NumCPU()
	}
	cfg.RenewMargin = time.Duration(renewMinutes) * time.Minute
	cfg.CompleteChecksums = !partial
	if resyncSecs < 1 {
		return fmt.Errorf("--iptables-resync %d: must be at least 1 second", resyncSecs)
	}
	cfg.FirewallResync = time.Duration(resyncSecs) * time.Second
	cfg.Logger = log
	cfg.Version = version
	if err := errors.Join(ef.validate(), cfg.Validate()); err != nil {
		return err
	}
	// Before the TUN, the port or the control socket: a second daemon
	// must leave the first one alone.
	unlock, err := lockInstance(cfg.TunName)
	if err != nil {
		return err
	}
	defer unlock()
	log.Info("starting overlayd", "version", version, "go", runtime.Version(), "pid", os.Getpid(), "control_socket", cfg.ControlSocket)
	fw, err := newFirewall(fwOpts, log)
	if err != nil {
		return err
	}
	reg, err := etcd.New(ef.options())
	if err != nil {
		return err
	}
	defer reg.Close()
	deps := tunnel.Deps{Registry: reg, Host: tunnel.SystemHost{Log: log}}
	if fw != nil { // not a typed nil in the interface
		deps.Firewall = fw
	}
	deps.IdleRequest = &idlepoll.CPULatency{} // taken only with --idle-poll
	return stopped(ctx, tunnel.Run(ctx, cfg, deps), log)
}

// stopped is Run's outcome as the exit status says it: a SIGTERM or ^C
// (ctx done) is a clean stop, even before the daemon was ready (waiting
// for etcd, say), so that systemctl stop leaves no unit failed.
func stopped(ctx context.Context, err error, log *slog.Logger) error {
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		log.Info("stopped before it was ready", "was", err)
		return nil
	}
	return err
}

// newFirewall builds the iptables rules keeper, or nil when no rules are
// asked for. Masquerading is asked for explicitly, so a host that cannot
// do it is an error; the forward rules are on by default, so a host
// without iptables only gets a warning.
func newFirewall(opts firewall.Options, log *slog.Logger) (*firewall.IPTables, error) {
	if !opts.Masquerade && !opts.Forward {
		return nil, nil
	}
	fw, err := firewall.NewIPTables(opts)
	switch {
	case err != nil && opts.Masquerade:
		return nil, fmt.Errorf("--ip-masq: %w", err)
	case err != nil:
		log.Warn("forward rules not installed: a FORWARD DROP policy (Docker's) will cut traffic between hosts", "error", err)
		return nil, nil
	}
	b := fw.Backend()
	log.Info("iptables", "backend", b.Name, "command", b.Path, "chosen_by", b.Why,
		"masquerade", opts.Masquerade, "forward_rules", opts.Forward)
	return fw, nil
}
