package main

import (
	"context"
	"errors"
	"os"
	"runtime"
	"time"

	"github.com/overlayd/overlayd/subnet/etcd"
	"github.com/overlayd/overlayd/tunnel"
)

func runDaemon(ctx context.Context, args []string) error {
	fs := newFlagSet("run")
	var (
		ef           etcdFlags
		lf           logFlags
		cfg          tunnel.Config
		renewMinutes int
		partial      bool
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
	fs.StringVar(&cfg.TunName, "tun-name", "flannel0", "name of the TUN device")
	fs.IntVar(&cfg.Queues, "queues", 0, "TUN queues, one forwarding worker each (default: one per CPU)")
	fs.StringVar(&cfg.ControlSocket, "control-socket", "", "unix socket of 'overlayd status' and /metrics: a path, or @name for an abstract socket "+
		"(default @overlayd/<tun-name>: abstract, so one per network namespace)")
	fs.BoolVar(&cfg.ReleaseOnExit, "release-on-exit", false, "delete this host's lease on a clean exit (flanneld keeps it)")
	fs.StringVar(&cfg.VXLANDataplane, "vxlan-dataplane", tunnel.DataplaneUserspace,
		"vxlan backend: \"userspace\" (overlayd forwards) or \"kernel\" (overlayd programs flannel.<VNI>, as flanneld)")
	fs.StringVar(&cfg.UnderlayKind, "underlay", tunnel.UnderlaySocket,
		"how packets reach other hosts: \"socket\" (UDP socket) or \"afpacket\" (AF_PACKET mmap rings)")
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
	if cfg.ControlSocket == "" {
		cfg.ControlSocket = defaultControlSocket(cfg.TunName)
	}
	if cfg.Queues == 0 {
		cfg.Queues = runtime.NumCPU()
	}
	cfg.RenewMargin = time.Duration(renewMinutes) * time.Minute
	cfg.CompleteChecksums = !partial
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
	reg, err := etcd.New(ef.options())
	if err != nil {
		return err
	}
	defer reg.Close()
	return tunnel.Run(ctx, cfg, tunnel.Deps{Registry: reg, Host: tunnel.SystemHost{Log: log}})
}
