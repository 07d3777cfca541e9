package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/topo"
	"github.com/overlayd/overlayd/subnet/backoff"
)

// flanneldSystem runs a flanneld binary the user has (nothing is
// downloaded) on every host, against an etcd in the switch namespace, as
// overlayd runs: the same topology, network config, docker0 and container
// from the subnet file. flanneld's vxlan backend is the kernel's VXLAN
// programmed by flanneld itself; its udp backend is flanneld's own
// userspace proxy, the data path overlayd's udp mode replaces.
type flanneldSystem struct {
	name   string
	config string // the network config JSON, which selects the backend
	// forwards: flanneld carries the packets (udp), rather than only
	// programming the kernel (vxlan).
	forwards bool
}

func (s flanneldSystem) Name() string { return s.name }

// flanneldWait bounds flanneld's start (its subnet file) and its learning
// the peer (the path check).
const flanneldWait = 30 * time.Second

func (s flanneldSystem) Setup(ctx context.Context, env Env) (_ Testbed, err error) {
	if env.Flanneld == "" {
		return nil, fmt.Errorf("%s: no flanneld binary: give one with --flanneld PATH", s.name)
	}
	if fi, err := os.Stat(env.Flanneld); err != nil {
		return nil, fmt.Errorf("%s: flanneld binary: %w", s.name, err)
	} else if fi.Mode()&0o111 == 0 || fi.IsDir() {
		return nil, fmt.Errorf("%s: flanneld binary %s is not an executable file", s.name, env.Flanneld)
	}
	c, err := cluster.StartRegistry(ctx, cluster.Options{
		Prefix:        env.Prefix,
		Hosts:         2,
		Overlayd:      env.Overlayd, // for `overlayd etcd`
		NetworkConfig: s.config,
		WorkDir:       env.WorkDir,
		UnderlayMTU:   env.UnderlayMTU,
		Shape:         env.Shape,
		Logf:          env.Logf,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	tb := &flanneldTestbed{cluster: c, forwards: s.forwards}
	defer func() {
		if err != nil {
			err = errors.Join(err, tb.Teardown())
		}
	}()
	for _, h := range c.Topo.Hosts {
		dir := filepath.Join(env.WorkDir, fmt.Sprintf("host%d", h.Index+1))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		subnetFile := filepath.Join(dir, "subnet.env")
		// FLANNEL.md §7: without --ip-masq=false flanneld would add NAT
		// rules; --iface pins the underlay, as on a real host.
		p, err := cluster.StartProcess(ctx, h.NS, filepath.Join(dir, "flanneld.log"), env.Flanneld,
			"--etcd-endpoints", c.EtcdEndpoint(), "--iface", h.Iface, "--ip-masq=false", "--subnet-file", subnetFile)
		if err != nil {
			return nil, fmt.Errorf("%s: start flanneld: %w", s.name, err)
		}
		tb.procs = append(tb.procs, p)
		senv, err := waitSubnetFile(ctx, p, subnetFile)
		if err != nil {
			return nil, fmt.Errorf("%s: host%d: %w", s.name, h.Index+1, err)
		}
		if err := h.AddBridge("docker0", senv.Subnet, senv.MTU); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		ct, err := h.AddContainer(senv.MTU)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		tb.containers = append(tb.containers, ct)
		tb.mtu = senv.MTU
	}
	// flanneld learns its peer from etcd's watch: give it time.
	deadline := time.Now().Add(flanneldWait)
	for {
		err := checkPath(ctx, tb.containers[0], tb.containers[1], tb.mtu)
		if err == nil {
			return tb, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		for _, p := range tb.procs {
			if p.Exited() {
				return nil, fmt.Errorf("%s: flanneld exited: %s", s.name, clip([]byte(p.Tail(400)), 400))
			}
		}
	}
}

// waitSubnetFile waits for flanneld to write its subnet file, which it does
// once it holds a lease and its backend is up.
func waitSubnetFile(ctx context.Context, p *cluster.Process, path string) (cluster.SubnetEnv, error) {
	deadline := time.Now().Add(flanneldWait)
	for {
		env, err := cluster.ReadSubnetEnv(path)
		if err == nil {
			return env, nil
		}
		if p.Exited() {
			return env, fmt.Errorf("flanneld exited: %s", clip([]byte(p.Tail(400)), 400))
		}
		if time.Now().After(deadline) {
			return env, fmt.Errorf("flanneld wrote no subnet file in %s (%v); its log: %s", flanneldWait, err, clip([]byte(p.Tail(400)), 400))
		}
		if err := backoff.Sleep(ctx, 100*time.Millisecond); err != nil {
			return env, err
		}
	}
}

type flanneldTestbed struct {
	forwards   bool // see flanneldSystem
	cluster    *cluster.Cluster
	procs      []*cluster.Process
	containers []*topo.Container
	mtu        int
}

func (t *flanneldTestbed) Endpoints() (client, server *topo.Container) {
	return t.containers[0], t.containers[1]
}

func (t *flanneldTestbed) ContainerMTU() int { return t.mtu }

// OverlaydPIDs is empty: flanneld's own CPU is not overlayd's; the
// machine-wide CPU column counts it.
func (t *flanneldTestbed) OverlaydPIDs() []int { return nil }

// ForwarderPIDs are the flanneld processes with the udp backend, which
// carry every packet; none with vxlan, where they only program the kernel.
func (t *flanneldTestbed) ForwarderPIDs() []int {
	if !t.forwards {
		return nil
	}
	pids := make([]int, 0, len(t.procs))
	for _, p := range t.procs {
		pids = append(pids, p.Pid())
	}
	return pids
}

func (t *flanneldTestbed) Teardown() error {
	var errs []error
	for _, p := range t.procs {
		errs = append(errs, p.Stop())
	}
	errs = append(errs, t.cluster.Close())
	return errors.Join(errs...)
}
