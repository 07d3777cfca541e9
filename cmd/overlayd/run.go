package main

import (
	"context"
	"errors"
	"flag"
	"runtime"
	"time"

	"github.com/overlayd/overlayd/subnet/etcd"
	"github.com/overlayd/overlayd/tunnel"
)

func runDaemon(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("overlayd run", flag.ContinueOnError)
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
	fs.StringVar(&cfg.HealthzIP, "healthz-ip", "0.0.0.0", "address of the /healthz and /readyz server")
	fs.IntVar(&cfg.HealthzPort, "healthz-port", 0, "port of the /healthz and /readyz server (0: off)")
	fs.StringVar(&cfg.TunName, "tun-name", "flannel0", "name of the TUN device")
	fs.IntVar(&cfg.Queues, "queues", runtime.NumCPU(), "TUN queues, one forwarding worker each (default: one per CPU)")
	fs.StringVar(&cfg.ControlSocket, "control-socket", "", "unix socket for `overlayd status` (default /run/overlayd/<tun-name>.sock)")
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
		cfg.ControlSocket = "/run/overlayd/" + cfg.TunName + ".sock"
	}
	cfg.RenewMargin = time.Duration(renewMinutes) * time.Minute
	cfg.CompleteChecksums = !partial
	cfg.Logger = log
	cfg.Version = version
	if err := errors.Join(ef.validate(), cfg.Validate()); err != nil {
		return err
	}
	log.Info("starting overlayd", "version", version, "go", runtime.Version())
	reg, err := etcd.New(ef.options())
	if err != nil {
		return err
	}
	defer reg.Close()
	return tunnel.Run(ctx, cfg, tunnel.Deps{Registry: reg, Host: tunnel.SystemHost{Log: log}})
}
