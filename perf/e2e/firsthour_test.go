package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/traffic"
	"github.com/overlayd/overlayd/tunnel"
)

// What a new user tries by hand in the first hour (issue 11), from the
// container's side and with overlayd's own commands.

// TestICMPErrorsReachContainer: the ICMP errors overlayd writes into the
// TUN arrive in the container, as iputils ping shows them: "Destination
// Net Unreachable" for an overlay address no host owns, and, for a
// container whose MTU is larger than the overlay's, "Frag needed" with the
// overlay MTU, after which its TCP connections (DF set) adapt.
func TestICMPErrorsReachContainer(t *testing.T) {
	requireRoot(t)
	ping, err := exec.LookPath("ping")
	if err != nil {
		t.Skip("ping (Debian iputils-ping) is not installed; .ci/run installs it")
	}
	c := startCluster(t, 2, cluster.Options{})
	waitFullMesh(t, c)
	ctx := context.Background()
	src, dst := c.Daemons[0], c.Daemons[1]

	t.Run("NetUnreachable", func(t *testing.T) {
		nowhere := unleasedAddr(t, c)
		before, err := src.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := src.Container.NS.Exec(ctx, ping, "-n", "-c", "2", "-W", "2", nowhere.String())
		if !strings.Contains(string(out), "Destination Net Unreachable") {
			after, _ := src.Status(ctx)
			t.Fatalf("ping %s from a container: no net unreachable seen (overlayd sent %d ICMP errors):\n%s",
				nowhere, after.Stats.ICMPSent-before.Stats.ICMPSent, out)
		}
		t.Logf("%s", firstLines(out, 3))
	})

	t.Run("FragNeededAndTCPAdapts", func(t *testing.T) {
		mtu := src.Env.MTU
		big, err := src.Host.AddContainer(1500)
		if err != nil {
			t.Fatal(err)
		}
		to := dst.Container.Addr.Addr().String()
		out, _ := big.NS.Exec(ctx, ping, "-n", "-c", "1", "-W", "2", "-M", "do", "-s", strconv.Itoa(mtu+1-28), to)
		want := fmt.Sprintf("Frag needed and DF set (mtu = %d)", mtu)
		if !strings.Contains(string(out), want) {
			t.Fatalf("DF ping of %d bytes from a 1500-MTU container: no %q:\n%s", mtu+1, want, out)
		}
		t.Logf("%s", firstLines(out, 2))
		// TCP sets DF: the transfer completes only if the path MTU adapts.
		res, err := traffic.Transfer(ctx, big.NS, dst.Container.NS, dst.Container.Addr.Addr(), 5301, 8<<20)
		if err != nil || !res.Identical {
			t.Fatalf("TCP transfer from a 1500-MTU container: %+v, %v", res, err)
		}
	})
}

// unleasedAddr is an overlay address in a subnet no host of c leased.
func unleasedAddr(t *testing.T, c *cluster.Cluster) netip.Addr {
	t.Helper()
	for third := 250; third < 255; third++ {
		a := netip.AddrFrom4([4]byte{100, 96, byte(third), 9})
		free := true
		for _, d := range c.Daemons {
			free = free && !d.Env.Subnet.Masked().Contains(a)
		}
		if free {
			return a
		}
	}
	t.Fatal("no unleased subnet among 100.96.250-254")
	return netip.Addr{}
}

func firstLines(b []byte, n int) string {
	lines := strings.SplitN(string(b), "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// TestOneDaemonPerNamespace: with the default control socket, `overlayd
// status` in each host's network namespace answers for that host's
// daemon; a second daemon with the same flags is refused, naming the
// first one's pid, and the first keeps running untouched.
func TestOneDaemonPerNamespace(t *testing.T) {
	c := startCluster(t, 2, cluster.Options{DefaultControlSocket: true})
	waitFullMesh(t, c)
	ctx := context.Background()

	t.Run("StatusPerNamespace", func(t *testing.T) {
		for _, d := range c.Daemons {
			out, err := d.Host.NS.Exec(ctx, overlaydBin, "status", "--json")
			if err != nil {
				t.Fatalf("%s: overlayd status: %v\n%s", d.Name(), err, out)
			}
			var s tunnel.Status
			if err := json.Unmarshal(out, &s); err != nil {
				t.Fatalf("%s: %v\n%s", d.Name(), err, out)
			}
			if s.Subnet != d.Env.Subnet.Masked().String() {
				t.Errorf("overlayd status in %s's namespace shows subnet %s, want its own %s", d.Name(), s.Subnet, d.Env.Subnet.Masked())
			}
		}
	})

	t.Run("SecondDaemonRefused", func(t *testing.T) {
		first := c.Daemons[0]
		before, err := first.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Bounded: without the refusal, the second daemon would run on.
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		out, err := first.Host.NS.Exec(tctx, overlaydBin, "run", "--etcd-endpoints", c.EtcdEndpoint(),
			"--iface", first.Host.Iface, "--subnet-file", first.SubnetFile)
		if err == nil || tctx.Err() != nil {
			t.Fatalf("a second overlayd with the same flags was not refused (%v):\n%s", err, out)
		}
		want := fmt.Sprintf("overlayd pid %d already runs with --tun-name flannel0 in this network namespace", first.Proc.Pid())
		if !strings.Contains(string(out), want) {
			t.Fatalf("refusal does not name the running daemon (%q):\n%s", want, out)
		}
		t.Logf("%s", firstLines(out, 1))
		after, err := first.Status(ctx)
		if err != nil || !after.Ready || after.Subnet != before.Subnet {
			t.Fatalf("the first daemon after the refusal: %+v, %v", after, err)
		}
		pingAllPairs(t, c)
	})
}
