package e2e

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/traffic"
)

// Interop with a real flanneld: $OVERLAYD_FLANNELD, or the reference
// binary of the project's shared anchors (see its README), which a user's
// clone does not have.

// flanneldBin returns the flanneld to run, or skips the test when there is
// none.
func flanneldBin(t *testing.T) string {
	t.Helper()
	bin, err := cluster.Flanneld()
	var envErr *cluster.EnvError
	if errors.As(err, &envErr) {
		t.Fatalf("flanneld interop: %v", err)
	}
	if err != nil {
		t.Skipf("flanneld interop: %v", err)
	}
	return bin
}

// TestFlanneldInterop runs a real flanneld v0.28.9 on host1 in one cluster
// with overlayd on host2 (UDP socket underlay) and host3 (AF_PACKET), once
// per backend, and moves 16 MiB between the containers of every pair of
// hosts, both ways. The veths keep their TX offloads on: with the vxlan
// backend, flanneld's flannel.1 sends its TCP super-frames whole, as
// between containers on one machine (kind).
func TestFlanneldInterop(t *testing.T) {
	bin := flanneldBin(t)
	for _, b := range []struct {
		name, config string
		superFrames  bool // flanneld's data plane is the kernel's, which sends them
	}{
		{"udp", cluster.DefaultNetworkConfig, false},
		{"vxlan", vxlanNetworkConfig, true},
	} {
		t.Run(b.name, func(t *testing.T) { flanneldInterop(t, bin, b.config, b.superFrames) })
	}
}

func flanneldInterop(t *testing.T, bin, config string, superFrames bool) {
	c := startCluster(t, 3, cluster.Options{NetworkConfig: config})
	waitFullMesh(t, c)
	ctx := context.Background()
	fl, afp := c.Daemons[0], c.Daemons[2]

	// host3 moves to AF_PACKET.
	if err := afp.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := afp.Start(ctx, afpacketArgs...); err != nil {
		t.Fatal(err)
	}
	if err := afp.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	checkUnderlayLogged(t, afp, "underlay afpacket")

	// host1's overlayd gives way to flanneld, which finds the lease by
	// its public IP and keeps the subnet: docker0 and the container
	// stay as they are, as when an operator swaps one for the other.
	if err := fl.Stop(); err != nil {
		t.Fatal(err)
	}
	startFlanneld(t, c, fl, bin)

	ovds := c.Daemons[1:]
	for _, d := range ovds {
		if err := d.WaitPeers(ctx, 30*time.Second, d.OtherSubnets()); err != nil {
			t.Fatalf("%s: %v", d.Name(), err)
		}
	}
	waitReachable(t, c, time.Minute)
	before := make(map[string]map[string]uint64)
	fragFails := make(map[string]uint64)
	for _, d := range ovds {
		s, err := d.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		before[d.Name()] = s.Stats.Drops
		fragFails[d.Name()] = snmpCounter(t, d.Host.NS, "Ip:", "FragFails")
	}

	t.Run("EveryPair", func(t *testing.T) {
		port := 5400
		for _, a := range c.Daemons {
			for _, b := range c.Daemons {
				if a == b {
					continue
				}
				port++
				if a != fl {
					transfer(t, a, b, port, interopBytes)
					continue
				}
				// What flanneld sends: with vxlan, super-frames.
				avg := rxAverage(t, b, func() { transfer(t, a, b, port, interopBytes) })
				t.Logf("%s received packets of %d bytes on average from flanneld (MTU %d)", b.Name(), avg, b.Env.MTU)
				if superFrames && avg <= b.Env.MTU {
					t.Errorf("flanneld's flannel.1 sent %s no super-frames: the test proves less than it says (veth offloads off?)", b.Name())
				}
			}
		}
	})
	t.Run("NothingDropped", func(t *testing.T) {
		for _, d := range ovds {
			s, err := d.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for r, n := range s.Stats.Drops {
				if n != before[d.Name()][r] {
					t.Errorf("%s dropped %d packets (%s)", d.Name(), n-before[d.Name()][r], r)
				}
			}
			for _, k := range []string{"malformed", "bad_checksum", "truncated"} { // AF_PACKET's own
				if s.Underlay[k] != 0 {
					t.Errorf("%s: the underlay dropped %d datagrams as %s", d.Name(), s.Underlay[k], k)
				}
			}
			if n := snmpCounter(t, d.Host.NS, "Ip:", "FragFails") - fragFails[d.Name()]; n != 0 {
				t.Errorf("%s's kernel could not forward %d packets for their size (Ip FragFails)", d.Name(), n)
			}
		}
	})
}

// startFlanneld runs flanneld on d's host in place of overlayd, with the
// same etcd, interface and network, and waits until it has written its
// subnet file for d's subnet. It is stopped, by its pid, when the test
// ends.
func startFlanneld(t *testing.T, c *cluster.Cluster, d *cluster.Daemon, bin string) {
	t.Helper()
	ctx := context.Background()
	subnetFile := filepath.Join(d.Dir, "flannel-subnet.env")
	p, err := cluster.StartProcess(ctx, d.Host.NS, filepath.Join(d.Dir, "flanneld.log"), bin,
		"--etcd-endpoints", c.EtcdEndpoint(),
		"--iface", d.Host.Iface,
		"--subnet-file", subnetFile,
		"-v", "1",
	)
	if err != nil {
		t.Fatalf("%s: start flanneld: %v", d.Name(), err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("%s: stop flanneld: %v", d.Name(), err)
		}
		if t.Failed() {
			t.Logf("---- %s flanneld.log ----\n%s", d.Name(), p.Tail(8192))
		}
	})
	t.Logf("%s: flanneld pid %d", d.Name(), p.Pid())

	deadline := time.Now().Add(time.Minute)
	for {
		env, err := cluster.ReadSubnetEnv(subnetFile)
		if err == nil {
			if env.Subnet != d.Env.Subnet || env.MTU != d.Env.MTU {
				t.Fatalf("%s: flanneld took %s (MTU %d), overlayd had %s (MTU %d)", d.Name(), env.Subnet, env.MTU, d.Env.Subnet, d.Env.MTU)
			}
			return
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("%s: flanneld wrote no subnet file (%v):\n%s", d.Name(), err, p.Tail(4096))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitReachable waits until every container pings every other, for at
// most timeout: a new peer's routes and neighbours take a moment.
func waitReachable(t *testing.T, c *cluster.Cluster, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for _, a := range c.Daemons {
		for _, b := range c.Daemons {
			if a == b {
				continue
			}
			for {
				res, err := traffic.Ping(ctx, a.Container.NS, b.Container.Addr.Addr(), 84, false, time.Second)
				if err == nil && res.Reply {
					break
				}
				if time.Now().After(deadline) {
					out, _ := a.Host.NS.Exec(ctx, "ip", "route")
					t.Fatalf("container on %s cannot reach %s on %s: %+v %v\n%s", a.Name(), b.Container.Addr.Addr(), b.Name(), res, err, strings.TrimSpace(string(out)))
				}
			}
		}
	}
}
