// Package cluster runs overlayd for real on emulated hosts: an etcd in the
// switch namespace, one overlayd process per host namespace, and a bridge
// with containers on each host addressed from the host's subnet file, as
// Docker's --bip would be. The demo, the integration tests and the
// benchmarks all drive overlayd through it.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/overlayd/overlayd/perf/topo"
	"github.com/overlayd/overlayd/subnet"
	"github.com/overlayd/overlayd/subnet/etcd"
	"github.com/overlayd/overlayd/tunnel"
)

// EtcdPort is where the cluster's etcd listens, on the switch address.
const EtcdPort = 2379

// DefaultNetworkConfig is the test overlay of DESIGN.md §5 with flannel's
// udp backend.
const DefaultNetworkConfig = `{"Network":"100.96.0.0/16","SubnetLen":24,"Backend":{"Type":"udp","Port":8285}}`

// Options describe a cluster.
type Options struct {
	Prefix        string     // unique name prefix for namespaces (netns.Prefix)
	Hosts         int        // emulated hosts, 2..8
	Overlayd      string     // path of the overlayd binary
	EtcdBinary    string     // external etcd server binary (e.g. /usr/bin/etcd); empty: `overlayd etcd`
	NetworkConfig string     // default DefaultNetworkConfig
	WorkDir       string     // logs, subnet files, sockets, etcd data; must exist
	DaemonArgs    []string   // extra flags for every overlayd
	ContainerMTU  int        // 0: the host's FLANNEL_MTU, as docker --mtu would set it
	UnderlayMTU   int        // of the underlay links; 0: 1500
	Shape         topo.Shape // delay, loss and rate cap of the underlay links
	// DefaultControlSocket starts overlayd without --control-socket: each
	// serves its default, @overlayd/flannel0 of its own network namespace.
	DefaultControlSocket bool
	NoContainers         bool // no bridge or container: the caller brings its own (a real dockerd)
	Logf                 func(format string, args ...any)
}

// Cluster is a running overlay of emulated hosts.
type Cluster struct {
	opts    Options
	Topo    *topo.Cluster
	etcd    *Process
	Daemons []*Daemon
}

// Daemon is overlayd on one emulated host.
type Daemon struct {
	Host          *topo.Host
	Proc          *Process
	Dir           string
	SubnetFile    string
	ControlSocket string
	Env           SubnetEnv // what overlayd wrote into its subnet file
	Container     *topo.Container
	cluster       *Cluster
}

// Check refuses, before anything is built, what would otherwise fail as a
// bring-up that times out: an overlayd that is no executable file (its
// failed exec shows only in a log), a topology topo refuses, a network
// config overlayd refuses.
func (o Options) Check() error {
	var errs []error
	if fi, err := os.Stat(o.Overlayd); err != nil {
		errs = append(errs, fmt.Errorf("the overlayd binary: %w (make build writes bin/overlayd; a relative path is from the current directory)", err))
	} else if fi.IsDir() || fi.Mode()&0o111 == 0 {
		errs = append(errs, fmt.Errorf("the overlayd binary %s: not an executable file", o.Overlayd))
	}
	errs = append(errs, topo.Options{Hosts: o.Hosts, UnderlayMTU: o.UnderlayMTU, Shape: o.Shape}.Check())
	if o.NetworkConfig != "" {
		cfg, err := subnet.ParseConfig([]byte(o.NetworkConfig))
		if err == nil {
			err = cfg.Ignored
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("network config: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Start builds the topology, starts etcd, writes the network config and
// brings up overlayd on every host with a bridge and one container each.
// On error everything started so far is torn down.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	c, err := StartRegistry(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	for _, h := range c.Topo.Hosts {
		d := &Daemon{Host: h, cluster: c, Dir: filepath.Join(opts.WorkDir, fmt.Sprintf("host%d", h.Index+1))}
		d.SubnetFile = filepath.Join(d.Dir, "subnet.env")
		d.ControlSocket = filepath.Join(d.Dir, "overlayd.sock")
		if opts.DefaultControlSocket {
			d.ControlSocket = "@overlayd/flannel0"
		}
		if err = os.MkdirAll(d.Dir, 0o755); err != nil {
			return nil, err
		}
		c.Daemons = append(c.Daemons, d)
	}
	for _, d := range c.Daemons {
		if err = d.Start(ctx); err != nil {
			return nil, err
		}
	}
	for _, d := range c.Daemons {
		if err = d.WaitReady(ctx); err != nil {
			return nil, err
		}
		if opts.NoContainers {
			continue
		}
		if err = d.addBridgeAndContainer(); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// StartRegistry builds the topology, starts etcd and writes the network
// config, but runs no overlayd: for another daemon (flanneld) to run
// against. opts.Overlayd is still needed for `overlayd etcd` unless
// opts.EtcdBinary is set. On error everything started so far is torn down.
func StartRegistry(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.NetworkConfig == "" {
		opts.NetworkConfig = DefaultNetworkConfig
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	c := &Cluster{opts: opts}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if c.Topo, err = topo.New(ctx, topo.Options{Prefix: opts.Prefix, Hosts: opts.Hosts, UnderlayMTU: opts.UnderlayMTU, Shape: opts.Shape}); err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	if err = c.startEtcd(ctx); err != nil {
		return nil, err
	}
	if err = c.PutConfig(ctx, opts.NetworkConfig); err != nil {
		return nil, err
	}
	return c, nil
}

// EtcdEndpoint is the client URL of the cluster's etcd, reachable from the
// host namespaces over the underlay.
func (c *Cluster) EtcdEndpoint() string {
	return "http://" + net.JoinHostPort(c.Topo.SwitchAddr.String(), strconv.Itoa(EtcdPort))
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	dataDir := filepath.Join(c.opts.WorkDir, "etcd")
	url := c.EtcdEndpoint()
	var argv []string
	if c.opts.EtcdBinary != "" {
		argv = []string{c.opts.EtcdBinary, "--name", "ovd", "--data-dir", dataDir,
			"--listen-client-urls", url, "--advertise-client-urls", url,
			"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
			"--initial-cluster", "ovd=http://127.0.0.1:2380"}
	} else {
		argv = []string{c.opts.Overlayd, "etcd", "--data-dir", dataDir, "--listen-client-urls", url}
	}
	p, err := StartProcess(ctx, c.Topo.Switch, filepath.Join(c.opts.WorkDir, "etcd.log"), argv...)
	if err != nil {
		return fmt.Errorf("start etcd: %w", err)
	}
	c.etcd = p
	c.opts.Logf("etcd (%s) pid %d at %s", filepath.Base(argv[0]), p.Pid(), url)
	return nil
}

// EtcdPid is the pid of the cluster's etcd server.
func (c *Cluster) EtcdPid() int { return c.etcd.Pid() }

// Registry returns a client of the cluster's etcd, dialling from inside the
// switch namespace. The caller closes it.
func (c *Cluster) Registry() (*etcd.Registry, error) {
	return etcd.New(etcd.Options{
		Endpoints:   []string{c.EtcdEndpoint()},
		DialTimeout: 5 * time.Second,
		Dialer: func(ctx context.Context, addr string) (net.Conn, error) {
			return c.Topo.Switch.DialContext(ctx, "tcp", addr)
		},
	})
}

// PutConfig writes the network config, waiting for etcd to come up.
func (c *Cluster) PutConfig(ctx context.Context, config string) error {
	reg, err := c.Registry()
	if err != nil {
		return err
	}
	defer reg.Close()
	return poll(ctx, 30*time.Second, func() error {
		return reg.PutConfig(ctx, []byte(config))
	})
}

// Close stops every process it started (by pid) and deletes the namespaces.
func (c *Cluster) Close() error {
	var errs []error
	for _, d := range c.Daemons {
		if d.Proc != nil {
			errs = append(errs, d.Proc.Stop())
		}
	}
	if c.etcd != nil {
		errs = append(errs, c.etcd.Stop())
	}
	if c.Topo != nil {
		errs = append(errs, c.Topo.Close())
	}
	return errors.Join(errs...)
}

// Name is the host's name in reports: host1 is 198.18.0.1.
func (d *Daemon) Name() string { return fmt.Sprintf("host%d", d.Host.Index+1) }

// Start runs overlayd on the daemon's host.
func (d *Daemon) Start(ctx context.Context, extra ...string) error {
	c := d.cluster
	argv := append([]string{c.opts.Overlayd, "run",
		"--etcd-endpoints", c.EtcdEndpoint(),
		"--iface", d.Host.Iface,
		"--subnet-file", d.SubnetFile,
		"--log-level", "debug",
	}, c.opts.DaemonArgs...)
	if !c.opts.DefaultControlSocket {
		argv = append(argv, "--control-socket", d.ControlSocket)
	}
	argv = append(argv, extra...)
	p, err := StartProcess(ctx, d.Host.NS, filepath.Join(d.Dir, "overlayd.log"), argv...)
	if err != nil {
		return fmt.Errorf("%s: start overlayd: %w", d.Name(), err)
	}
	d.Proc = p
	c.opts.Logf("%s: overlayd pid %d", d.Name(), p.Pid())
	return nil
}

// Stop sends SIGTERM and waits for overlayd to exit.
func (d *Daemon) Stop() error {
	if d.Proc == nil {
		return nil
	}
	err := d.Proc.Stop()
	d.Proc = nil
	return err
}

// WaitReady waits until overlayd reports ready and its subnet file exists.
func (d *Daemon) WaitReady(ctx context.Context) error {
	err := poll(ctx, 60*time.Second, func() error {
		if d.Proc != nil && d.Proc.Exited() {
			return errStop{fmt.Errorf("overlayd exited: %s", d.Proc.Tail(2048))}
		}
		s, err := d.Status(ctx)
		if err != nil {
			return err
		}
		if !s.Ready {
			return errors.New("not ready")
		}
		env, err := ReadSubnetEnv(d.SubnetFile)
		if err != nil {
			return err
		}
		d.Env = env
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: overlayd not ready: %w", d.Name(), err)
	}
	return nil
}

// Status queries overlayd's control socket, from the daemon's network
// namespace (an abstract socket is only there).
func (d *Daemon) Status(ctx context.Context) (tunnel.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return tunnel.QueryStatusDial(ctx, d.ControlSocket, d.Host.NS.DialContext)
}

// WaitPeers waits until the daemon's peer table holds exactly want.
func (d *Daemon) WaitPeers(ctx context.Context, timeout time.Duration, want []netip.Prefix) error {
	return poll(ctx, timeout, func() error {
		s, err := d.Status(ctx)
		if err != nil {
			return err
		}
		got := s.PeerSubnets()
		if !samePrefixes(got, want) {
			return fmt.Errorf("peers %v, want %v", got, want)
		}
		return nil
	})
}

// OtherSubnets is every daemon's subnet but d's.
func (d *Daemon) OtherSubnets() []netip.Prefix {
	var out []netip.Prefix
	for _, o := range d.cluster.Daemons {
		if o != d && o.Env.Subnet.IsValid() {
			out = append(out, o.Env.Subnet.Masked())
		}
	}
	return out
}

func (d *Daemon) addBridgeAndContainer() error {
	if d.Container != nil {
		return nil
	}
	mtu := d.cluster.opts.ContainerMTU
	if mtu == 0 {
		mtu = d.Env.MTU
	}
	if err := d.Host.AddBridge("docker0", d.Env.Subnet, d.Env.MTU); err != nil {
		return fmt.Errorf("%s: bridge: %w", d.Name(), err)
	}
	ct, err := d.Host.AddContainer(mtu)
	if err != nil {
		return fmt.Errorf("%s: container: %w", d.Name(), err)
	}
	d.Container = ct
	return nil
}

// errStop ends a poll early.
type errStop struct{ error }

// poll calls f until it succeeds, returns errStop, or timeout passes.
func poll(ctx context.Context, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := 20 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		var stop errStop
		if errors.As(err, &stop) {
			return stop.error
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 250*time.Millisecond)
	}
}

func samePrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	set := make(map[netip.Prefix]bool, len(a))
	for _, p := range a {
		set[p.Masked()] = true
	}
	for _, p := range b {
		if !set[p.Masked()] {
			return false
		}
	}
	return true
}

// SubnetEnv is a parsed flannel subnet file.
type SubnetEnv struct {
	Network netip.Prefix
	Subnet  netip.Prefix // with the host bits of the bridge address, e.g. 100.96.3.1/24
	MTU     int
	IPMasq  bool
}

// ReadSubnetEnv parses the subnet file overlayd wrote.
func ReadSubnetEnv(path string) (SubnetEnv, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return SubnetEnv{}, err
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	var env SubnetEnv
	var errs []error
	if env.Network, err = netip.ParsePrefix(vars["FLANNEL_NETWORK"]); err != nil {
		errs = append(errs, fmt.Errorf("FLANNEL_NETWORK: %w", err))
	}
	if env.Subnet, err = netip.ParsePrefix(vars["FLANNEL_SUBNET"]); err != nil {
		errs = append(errs, fmt.Errorf("FLANNEL_SUBNET: %w", err))
	}
	if env.MTU, err = strconv.Atoi(vars["FLANNEL_MTU"]); err != nil {
		errs = append(errs, fmt.Errorf("FLANNEL_MTU: %w", err))
	}
	env.IPMasq = vars["FLANNEL_IPMASQ"] == "true"
	return env, errors.Join(errs...)
}
