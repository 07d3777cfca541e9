package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/overlayd/overlayd/perf/cluster"
	"github.com/overlayd/overlayd/perf/netns"
)

// TestPartialChecksumsToLegacyPeer: overlayd hosts whose TUNs have offloads
// advertise it and leave the TCP and UDP checksums of what they send each
// other partial; a host that needs complete checksums, as a flanneld host
// does, advertises nothing and gets them complete. host3 plays that host
// (--partial-checksums=false): its TUN checks every checksum it receives,
// so that one left partial reaches its container as it would reach
// flanneld's, to be counted and dropped there.
func TestPartialChecksumsToLegacyPeer(t *testing.T) {
	c := startCluster(t, 3, cluster.Options{})
	capable, legacy := c.Daemons[:2], c.Daemons[2]
	restart(t, legacy, "--partial-checksums=false")
	waitFullMesh(t, c)

	for _, d := range c.Daemons {
		want := `{"PartialChecksums":true}`
		if d == legacy {
			want = "" // as flanneld writes a udp lease
		}
		if l := leaseOf(t, c, d); string(l.Attrs.BackendData) != want {
			t.Errorf("%s: lease BackendData %s, want %q", d.Name(), l.Attrs.BackendData, want)
		}
	}
	for _, d := range capable {
		checkUnderlayLogged(t, d, "tso=true") // its kernel hands it TCP super-packets to split
	}
	waitPeerChecksums(t, c, legacy)

	before := checksumErrors(t, c)
	t.Run("TCPToLegacy", func(t *testing.T) { transfer(t, capable[0], legacy, 5221, transferBytes) })
	t.Run("UDPToLegacy", func(t *testing.T) { datagrams(t, capable[1], legacy, 5222) })
	t.Run("TCPFromLegacy", func(t *testing.T) { transfer(t, legacy, capable[0], 5223, transferBytes) })
	t.Run("TCPBetweenCapable", func(t *testing.T) { transfer(t, capable[0], capable[1], 5224, transferBytes) })
	t.Run("UDPBetweenCapable", func(t *testing.T) { datagrams(t, capable[1], capable[0], 5225) })
	t.Run("NoChecksumErrors", func(t *testing.T) {
		after := checksumErrors(t, c)
		for _, d := range c.Daemons {
			if n := after[d] - before[d]; n != 0 {
				t.Errorf("%s's container dropped %d packets with bad TCP or UDP checksums", d.Name(), n)
			}
		}
	})
}

// waitPeerChecksums waits until every host's peer table says what each
// peer takes: partial checksums but from legacy.
func waitPeerChecksums(t *testing.T, c *cluster.Cluster, legacy *cluster.Daemon) {
	t.Helper()
	want := make(map[string]bool)
	for _, d := range c.Daemons {
		want[d.Env.Subnet.Masked().String()] = d != legacy
	}
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for _, d := range c.Daemons {
		for {
			err := peerChecksums(ctx, d, want)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", d.Name(), err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func peerChecksums(ctx context.Context, d *cluster.Daemon, want map[string]bool) error {
	s, err := d.Status(ctx)
	if err != nil {
		return err
	}
	if len(s.Peers) != len(want)-1 {
		return fmt.Errorf("%d peers", len(s.Peers))
	}
	for _, p := range s.Peers {
		if p.PartialChecksums != want[p.Subnet] {
			return fmt.Errorf("peer %s: partial checksums %v, want %v", p.Subnet, p.PartialChecksums, want[p.Subnet])
		}
	}
	return nil
}

// datagrams sends UDP datagrams from a's container to b's: some must
// arrive, and none with a bad checksum (NoChecksumErrors). UDP may lose
// some on its way; a bad checksum would lose them all.
func datagrams(t *testing.T, a, b *cluster.Daemon, port int) {
	t.Helper()
	const count, size = 200, 1200
	dst := netip.AddrPortFrom(b.Container.Addr.Addr(), uint16(port))
	var conn *net.UDPConn
	err := b.Container.NS.Do(func() (err error) {
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(dst))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	payload := make([]byte, size)
	err = a.Container.NS.Do(func() error {
		out, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer out.Close()
		for i := range count {
			payload[0] = byte(i)
			if _, err := out.Write(payload); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send from %s: %v", a.Name(), err)
	}
	got := 0
	buf := make([]byte, 2*size)
	for got < count {
		// The wait bounds a test whose datagrams are lost, not its result.
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			break
		}
		if n != size {
			t.Fatalf("datagram of %d bytes, sent %d", n, size)
		}
		got++
	}
	if got == 0 {
		t.Fatalf("%s -> %s: none of %d datagrams arrived", a.Name(), b.Name(), count)
	}
	t.Logf("%s -> %s: %d of %d datagrams", a.Name(), b.Name(), got, count)
}

// checksumErrors reads the count of TCP and UDP packets each host's
// container dropped for a bad checksum (InCsumErrors).
func checksumErrors(t *testing.T, c *cluster.Cluster) map[*cluster.Daemon]uint64 {
	t.Helper()
	out := make(map[*cluster.Daemon]uint64, len(c.Daemons))
	for _, d := range c.Daemons {
		out[d] = snmpCounter(t, d.Container.NS, "Tcp:", "InCsumErrors") + snmpCounter(t, d.Container.NS, "Udp:", "InCsumErrors")
	}
	return out
}

// snmpCounter reads one counter of /proc/net/snmp in ns.
func snmpCounter(t *testing.T, ns *netns.NS, proto, name string) uint64 {
	t.Helper()
	snmp, err := ns.Exec(context.Background(), "cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	return snmpValue(t, snmp, ns.Name, proto, name)
}

// snmpValue finds one counter in /proc/net/snmp's format (of where): for
// each protocol ("Udp:") a line of names, then a line of values.
func snmpValue(t *testing.T, snmp []byte, where, proto, name string) uint64 {
	t.Helper()
	var names []string
	for _, line := range strings.Split(string(snmp), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != proto {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, n := range names {
			if n == name && i < len(fields) {
				v, err := strconv.ParseUint(fields[i], 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
		}
	}
	t.Fatalf("%s: no %s %s in /proc/net/snmp", where, proto, name)
	return 0
}
