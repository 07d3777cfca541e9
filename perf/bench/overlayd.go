package bench

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/topo"
)

// overlaydSystem runs overlayd on every host through package cluster:
// etcd in the switch namespace, the network config, and a docker0 and
// container per host that take FLANNEL_SUBNET and FLANNEL_MTU from the
// subnet file.
type overlaydSystem struct {
	name   string
	config string   // the network config JSON, which selects the backend
	args   []string // extra overlayd flags, e.g. --vxlan-dataplane
	// kernel: the kernel forwards, overlayd only programs it (host-gw,
	// the kernel VXLAN dataplane), so overlayd is no forwarder.
	kernel bool
}

func (s overlaydSystem) Name() string { return s.name }

func (s overlaydSystem) Setup(ctx context.Context, env Env) (_ Testbed, err error) {
	c, err := cluster.Start(ctx, cluster.Options{
		Prefix:        env.Prefix,
		Hosts:         2,
		Overlayd:      env.Overlayd,
		NetworkConfig: s.config,
		WorkDir:       env.WorkDir,
		// cluster asks for debug logs; a benchmark wants the default.
		DaemonArgs:  append([]string{"--log-level", "info"}, s.args...),
		UnderlayMTU: env.UnderlayMTU,
		Shape:       env.Shape,
		Logf:        env.Logf,
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()
	for _, d := range c.Daemons {
		if err := d.WaitPeers(ctx, 30*time.Second, d.OtherSubnets()); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", s.name, d.Name(), err)
		}
	}
	tb := &overlaydTestbed{cluster: c, kernel: s.kernel}
	client, server := tb.Endpoints()
	if err := checkPath(ctx, client, server, c.Daemons[0].Env.MTU); err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	return tb, nil
}

type overlaydTestbed struct {
	cluster *cluster.Cluster
	kernel  bool // see overlaydSystem
}

func (t *overlaydTestbed) Endpoints() (client, server *topo.Container) {
	return t.cluster.Daemons[0].Container, t.cluster.Daemons[1].Container
}

func (t *overlaydTestbed) ContainerMTU() int { return t.cluster.Daemons[0].Env.MTU }

func (t *overlaydTestbed) OverlaydPIDs() []int {
	var pids []int
	for _, d := range t.cluster.Daemons {
		if d.Proc != nil {
			pids = append(pids, d.Proc.Pid())
		}
	}
	return pids
}

// ForwarderPIDs are the overlayd processes, unless the kernel forwards.
func (t *overlaydTestbed) ForwarderPIDs() []int {
	if t.kernel {
		return nil
	}
	return t.OverlaydPIDs()
}

func (t *overlaydTestbed) Teardown() error { return t.cluster.Close() }
